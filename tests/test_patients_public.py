"""The patients service's public functions other services use (FHIR import, prescriptions)."""

from __future__ import annotations

from datetime import date

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
from services.patients.models import Dispensing, Identity, Patient
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
