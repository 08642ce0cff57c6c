"""Patient records and the Bilan Partagé de Médication (BPM).

Identity (NIR, INS), médecin traitant, coverage, consents, clinical context and dispensing
history, with NIR/INS and notes sealed field by field under their own key, search by name,
birth date, NIR or INS, stable pseudonyms, and the BPM's yearly cycles. Every read is audited.
See docs/patients.md.
"""

from __future__ import annotations

from datetime import date

from appliance.plugin import ServicePlugin
from appliance.store import Store
from services.patients import store as _repository
from services.patients.api import PatientController, PseudonymController
from services.patients.bpm_api import BpmController
from services.patients.eligibility import (
    Eligibility,
    EligibilityRule,
    SubstancePeriod,
    bpm_eligibility,
    rule_in_force,
)
from services.patients.models import Dispensing
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


PLUGIN = ServicePlugin(
    name="patients",
    controllers=(PatientController, PseudonymController, BpmController),
    migrations=MIGRATIONS,
)

__all__ = [
    "PLUGIN",
    "Eligibility",
    "EligibilityRule",
    "SubstancePeriod",
    "bpm_eligibility",
    "bpm_enrolled",
    "dispensing_entries",
    "dispensing_lines",
    "patient_birth_date",
    "patients_with_dispensings",
    "rule_in_force",
]
