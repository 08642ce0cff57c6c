"""``hygie demo load``: 50 patients of whom 20 BPM-eligible (by the real eligibility rule,
through the API), users, a scan; idempotent; refuses a store with other patients."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from appliance.cli import main
from appliance.demo import data
from appliance.platform import Platform
from services.patients import patient_crypto, patient_ids, save_patient
from services.patients.logic import nir_is_valid, rpps_is_valid
from services.patients.models import Identity, Patient

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bdpm-mini"


def _load(*args: str) -> Result:
    return CliRunner().invoke(main, ["demo", "load", "--catalog", str(FIXTURE), *args])


def test_the_demo_data_is_well_formed() -> None:
    patients = data.patients(date(2026, 11, 25))
    assert len(patients) == 50
    assert sum(p.meant_eligible for p in patients) == 20
    assert len({p.patient_id for p in patients}) == 50
    for patient in patients:
        identity = patient.record.identity
        assert identity.nir is not None
        assert nir_is_valid(identity.nir), identity.nir
        assert patient.record.gp is not None
        assert rpps_is_valid(patient.record.gp.rpps or ""), patient.record.gp.rpps
    # CKD-EPI 2021 worked by hand: creatinine 1.0 mg/dL (88.42 µmol/L), woman of 70:
    # 142 x (1.0/0.7)^-1.200 x 0.9938^70 x 1.012 = 60.6; man of 50 at 0.9 mg/dL: 142 x 0.9938^50
    assert data.ckd_epi_2021(88.42, 70, "F") == 60.6
    assert data.ckd_epi_2021(0.9 * 88.42, 50, "M") == round(142 * 0.9938**50, 1)


@pytest.mark.slow
def test_demo_load_is_idempotent_and_gives_twenty_eligible_patients(
    env: dict[str, str], platform: Platform, client: Any, token_for: Callable[..., str]
) -> None:
    first = _load("--scans", "1")
    assert first.exit_code == 0, first.output
    assert "50 créé(s)" in first.output
    assert "1 importée(s) en brouillon" in first.output
    assert first.output.count("mot de passe : Demo-") == 3
    second = _load("--scans", "1")
    assert second.exit_code == 0, second.output
    assert "0 créé(s), 50 déjà présent(s)" in second.output
    assert "déjà importées" in second.output
    assert "mot de passe : Demo-" not in second.output
    assert sorted(patient_ids(platform.store)) == sorted(data.demo_patient_ids())

    headers = {"Authorization": f"Bearer {token_for('bpm:read', 'patients:read')}"}
    eligible = client.get("/api/v1/bpm/eligible", headers=headers)
    assert eligible.status_code == 200, eligible.text
    expected = {p.patient_id for p in data.patients(data_today()) if p.meant_eligible}
    assert {v["patient_id"] for v in eligible.json()} == expected
    assert all(v["eligibility"]["substance_count"] >= 5 for v in eligible.json())
    drafts = client.get(
        "/api/v1/imports",
        headers={"Authorization": f"Bearer {token_for('prescriptions:import')}"},
    )
    assert drafts.status_code == 200, drafts.text
    assert len(drafts.json()) == 1

    # A patient the demo did not create: refused, then loaded anyway with --force.
    other = data.patients(data_today())[0].record
    crypto = patient_crypto(platform.settings)
    stranger = Identity(
        birth_family_name="AUTRE", given_names="Paul", birth_date=other.identity.birth_date, sex="M"
    )
    save_patient(platform.store, crypto, Patient(identity=stranger), actor="t", today=data_today())
    refused = _load("--scans", "0")
    assert refused.exit_code == 1
    assert "1 patient(s) hors démonstration" in refused.output
    forced = _load("--scans", "0", "--force")
    assert forced.exit_code == 0, forced.output


def data_today() -> date:
    return date.today()
