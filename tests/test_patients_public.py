"""The patients service's public functions other services use (FHIR import, prescriptions)."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from appliance.platform import Platform
from appliance.store import VersionConflictError
from services.patients import (
    PatientRejected,
    bpm_enrolled,
    dispensing_entries,
    find_patient,
    load_patient,
    patient_birth_date,
    patient_crypto,
    patients_with_dispensings,
    save_dispensing,
    save_patient,
)
from services.patients.models import Clinical, Dispensing, Identity, Patient
from services.patients.store import DuplicateIdentifierError

NIR = "262087503203977"
TODAY = date(2025, 6, 1)


def _patient(nir: str | None = NIR) -> Patient:
    return Patient(
        identity=Identity(
            birth_family_name="DUPRÉ",
            given_names="Hélène",
            birth_date=date(1962, 8, 15),
            sex="F",
            nir=nir,
        )
    )


def test_save_find_load_and_dispense(platform: Platform) -> None:
    crypto = patient_crypto(platform.settings)
    store = platform.store
    pid, version = save_patient(store, crypto, _patient(), actor="t", today=TODAY)
    assert version == 1
    assert find_patient(store, crypto, nir="2 62 08 75 032 039 77") == pid
    assert find_patient(store, crypto) is None
    loaded = load_patient(store, crypto, pid)
    assert loaded is not None
    assert loaded[0].identity.nir == NIR
    assert patient_birth_date(store, pid) == date(1962, 8, 15)
    assert patient_birth_date(store, "nobody") is None
    with pytest.raises(DuplicateIdentifierError):
        save_patient(store, crypto, _patient(), actor="t", today=TODAY)
    with pytest.raises(VersionConflictError):
        save_patient(store, crypto, _patient(), actor="t", today=TODAY, patient_id=pid)
    with pytest.raises(PatientRejected, match=r"identity\.nir"):
        save_patient(store, crypto, _patient("262087503203978"), actor="t", today=TODAY)
    line = Dispensing(dispensed_on=date(2025, 5, 1), quantity=1, cis="60234100")
    line_id = save_dispensing(store, pid, line, actor="t", today=TODAY)
    assert dispensing_entries(store, pid) == [(line_id, line)]
    assert patients_with_dispensings(store) == [pid]
    with pytest.raises(PatientRejected):
        save_dispensing(
            store, pid, Dispensing(dispensed_on=TODAY, quantity=1), actor="t", today=TODAY
        )
    assert not bpm_enrolled(store, pid)


def test_patient_and_bpm_versions_are_queued_for_the_cloud_pseudonymised(
    platform: Platform,
) -> None:
    """Each patient version and each BPM state change lands in the outbox, in the same
    transaction, keyed by the pseudonym and without a direct identifier."""
    import json

    from services.patients.bpm import BpmCycle, BpmStep, StoredBpmCycle
    from services.patients.models import Condition, GeneralPractitioner
    from services.patients.store import get_patient, save_cycle

    crypto = patient_crypto(platform.settings)
    store = platform.store
    patient = msgspec.structs.replace(
        _patient(),
        gp=GeneralPractitioner(name="Dr Jean MARTIN", rpps="10003456786"),
        clinical=Clinical(conditions=(Condition(icd10="I10", label="HTA de Mme Dupré"),)),
    )
    pid, _ = save_patient(store, crypto, patient, actor="t", today=TODAY)
    save_patient(store, crypto, patient, actor="t", today=TODAY, patient_id=pid, expected_version=1)
    stored = get_patient(store, pid)
    assert stored is not None
    pseudonym = stored.entity.pseudonym
    cycle = BpmCycle(
        patient_id=pid,
        year=1,
        opened_on=TODAY,
        steps=(BpmStep(kind="adhesion", performed_on=TODAY, pharmacist="u-pharma"),),
    )
    save_cycle(store, StoredBpmCycle(cycle_id="bpm-1", cycle=cycle), actor="t", expected_version=0)
    rows = store.db.execute(
        "SELECT stream, kind, payload, idempotency_key FROM sync_outbox ORDER BY seq"
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        ("patients", "patient.version"),
        ("patients", "patient.version"),
        ("bpm", "bpm.cycle.version"),
    ]
    assert [r[3] for r in rows] == [
        f"patient:{pseudonym}:1",
        f"patient:{pseudonym}:2",
        "bpm:bpm-1:1",
    ]
    first = json.loads(rows[0][2])
    assert first["pseudonym"] == pseudonym
    assert first["birth_year"] == 1962
    assert first["conditions"] == [{"icd10": "I10", "status": "active", "onset": None}]
    assert first["gp_rpps"] == "10003456786"
    bpm = json.loads(rows[2][2])
    assert bpm["pseudonym"] == pseudonym
    assert bpm["steps"][0]["kind"] == "adhesion"
    everything = " ".join(r[2] for r in rows)
    for identifier in (pid, NIR, "DUPR", "Hélène", "1962-08-15", "MARTIN", "Mme"):
        assert identifier not in everything, identifier
