"""Patient records and the Bilan Partagé de Médication (BPM).

Identity (NIR, INS), médecin traitant, coverage, consents, clinical context and dispensing
history, with NIR/INS and notes sealed field by field under their own key, search by name,
birth date, NIR or INS, stable pseudonyms, and the BPM's yearly cycles. Every read is audited.
See docs/patients.md.
"""

from __future__ import annotations

import uuid
from datetime import date

from appliance.config import Settings
from appliance.fieldcrypto import load_field_keys
from appliance.plugin import ServicePlugin
from appliance.store import Store
from services.patients import store as _repository
from services.patients.api import PatientController, PseudonymController
from services.patients.bpm import BpmCycle
from services.patients.bpm_api import BpmController
from services.patients.eligibility import (
    Eligibility,
    EligibilityRule,
    SubstancePeriod,
    bpm_eligibility,
    rule_in_force,
)
from services.patients.logic import (
    PatientCrypto,
    fold,
    names_folded,
    normalise_dispensing,
    normalise_patient,
    seal_patient,
    unseal_patient,
    validate_dispensing,
    validate_patient,
)
from services.patients.models import Dispensing, FieldError, Patient, StoredDispensing
from services.patients.store import MIGRATIONS


def dispensing_lines(
    store: Store, patient_id: str, *, since: date | None = None, limit: int = 1000
) -> list[Dispensing]:
    """A patient's live dispensing lines, most recent first (for BPM eligibility: their CIS
    and CIP13 map to substances through the medications service).

    Not audited here: the route that calls it audits its access to the patient.
    """
    lines = _repository.dispensings_of(store, patient_id, since=since, limit=limit, offset=0)
    return [line.entity.entry for line in lines]


class PatientRejected(Exception):
    """A patient record that breaks the record's rules; ``errors`` lists every one."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.key}: {e.message}" for e in errors))
        self.errors = errors


def patient_crypto(settings: Settings) -> PatientCrypto:
    """The patient field keys (raises ``SecretError`` when ``field.key`` is missing)."""
    return PatientCrypto.from_keys(load_field_keys(settings))


def load_patient(
    store: Store, crypto: PatientCrypto, patient_id: str
) -> tuple[Patient, int] | None:
    """A live patient record, unsealed, with its version (not audited: the caller does)."""
    item = _repository.get_patient(store, patient_id)
    if item is None or item.deleted:
        return None
    return unseal_patient(item.entity, crypto), item.version


def find_patient(
    store: Store, crypto: PatientCrypto, *, nir: str | None = None, ins: str | None = None
) -> str | None:
    """The id of the patient with this NIR or INS (exact, through the blind index)."""
    if not (nir or ins):
        return None
    found = _repository.search_patients(
        store,
        terms=[],
        birth_date=None,
        nir_index=crypto.nir_index.compute(nir) if nir else None,
        ins_index=crypto.ins_index.compute(ins) if ins else None,
        limit=1,
    )
    return found[0].entity_id if found else None


def save_patient(
    store: Store,
    crypto: PatientCrypto,
    patient: Patient,
    *,
    actor: str,
    today: date,
    patient_id: str | None = None,
    expected_version: int = 0,
) -> tuple[str, int]:
    """Create (no ``patient_id``) or replace a patient record with the same rules as the API.

    Raises :class:`PatientRejected`, ``DuplicateIdentifierError`` or
    ``VersionConflictError``. Not audited here: the caller audits.
    """
    normalised = normalise_patient(patient)
    errors = validate_patient(normalised, today)
    if errors:
        raise PatientRejected(errors)
    if patient_id is None:
        patient_id = str(uuid.uuid4())
        pseudonym = crypto.pseudonyms.pseudonym(patient_id)
    else:
        current = _repository.get_patient(store, patient_id)
        pseudonym = current.entity.pseudonym if current else crypto.pseudonyms.pseudonym(patient_id)
    stored = seal_patient(patient_id, pseudonym, normalised, crypto)
    identity = normalised.identity
    row = _repository.SearchRow(
        names_folded=names_folded(identity),
        family_folded=fold(identity.used_family_name or identity.birth_family_name),
        birth_date=identity.birth_date,
    )
    saved = _repository.save_patient(
        store, stored, row, actor=actor, expected_version=expected_version
    )
    return patient_id, saved.version


def save_dispensing(
    store: Store, patient_id: str, entry: Dispensing, *, actor: str, today: date
) -> str:
    """Append a dispensing line (same checks as the API); raises :class:`PatientRejected`."""
    normalised = normalise_dispensing(entry)
    errors = validate_dispensing(normalised, today)
    if errors:
        raise PatientRejected(errors)
    stored = StoredDispensing(
        dispensing_id=str(uuid.uuid4()), patient_id=patient_id, entry=normalised
    )
    return _repository.save_dispensing(store, stored, actor=actor, expected_version=0).entity_id


def patient_birth_date(store: Store, patient_id: str) -> date | None:
    """The birth date of a live patient record, ``None`` when there is no such patient
    (for other services that attach data to a patient: prescriptions, FHIR import).

    Not audited here: the caller audits its own access.
    """
    item = _repository.get_patient(store, patient_id)
    if item is None or item.deleted:
        return None
    return item.entity.record.identity.birth_date


def patients_with_dispensings(store: Store) -> list[str]:
    """Ids of the patients who have at least one live dispensing line."""
    rows = store.db.execute(
        "SELECT DISTINCT patient_id FROM patient_dispensing_index WHERE voided = 0 "
        "ORDER BY patient_id"
    ).fetchall()
    return [str(row[0]) for row in rows]


def patient_ids(store: Store) -> list[str]:
    """Ids of every stored patient record (live or not), sorted: to tell a store's own data
    from a demo's. Not audited: ids only, no patient data."""
    rows = store.db.execute("SELECT patient_id FROM patient_search ORDER BY patient_id")
    return [str(row[0]) for row in rows.fetchall()]


def dispensing_entries(store: Store, patient_id: str) -> list[tuple[str, Dispensing]]:
    """A patient's live dispensing lines with their ids, most recent first (not audited)."""
    lines = _repository.dispensings_of(store, patient_id, since=None, limit=100_000, offset=0)
    return [(line.entity_id, line.entity.entry) for line in lines]


def bpm_enrolled(store: Store, patient_id: str) -> bool:
    """Whether the patient has a BPM cycle in progress or completed (abandoned ones do not
    count)."""
    return any(
        cycle.entity.cycle.status != "abandoned"
        for cycle in _repository.cycles_of(store, patient_id)
    )


def bpm_cycle(store: Store, crypto: PatientCrypto, cycle_id: str) -> BpmCycle | None:
    """A BPM cycle with its step notes unsealed (not audited: the caller audits)."""
    from services.patients.bpm import unseal_cycle

    item = _repository.get_cycle(store, cycle_id)
    return None if item is None else unseal_cycle(item.entity, crypto.cipher)


def bpm_cycles(store: Store, patient_id: str | None = None) -> list[tuple[str, BpmCycle]]:
    """BPM cycles (id, cycle) of one patient or of every patient, step notes left sealed
    out (``notes`` is ``None``): for status exports. Not audited: the caller audits."""
    if patient_id is not None:
        items = _repository.cycles_of(store, patient_id)
    else:
        ids = [
            str(row[0])
            for row in store.db.execute(
                "SELECT cycle_id FROM bpm_cycle_index ORDER BY patient_id, year, cycle_id"
            ).fetchall()
        ]
        items = [i for i in (_repository.get_cycle(store, c) for c in ids) if i is not None]
    return [(item.entity_id, item.entity.cycle) for item in items]


PLUGIN = ServicePlugin(
    name="patients",
    controllers=(PatientController, PseudonymController, BpmController),
    migrations=MIGRATIONS,
)

__all__ = [
    "PLUGIN",
    "BpmCycle",
    "Eligibility",
    "EligibilityRule",
    "PatientCrypto",
    "PatientRejected",
    "SubstancePeriod",
    "bpm_cycle",
    "bpm_cycles",
    "bpm_eligibility",
    "bpm_enrolled",
    "dispensing_entries",
    "dispensing_lines",
    "find_patient",
    "load_patient",
    "patient_birth_date",
    "patient_crypto",
    "patient_ids",
    "patients_with_dispensings",
    "rule_in_force",
    "save_dispensing",
    "save_patient",
]
