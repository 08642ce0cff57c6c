"""Prescriptions: pure rules, then the API (validation report, versions, audit)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appliance.cli import main
from appliance.platform import Platform
from services.prescriptions import active_medications, doses, logic
from services.prescriptions.models import (
    Duration,
    Posology,
    Prescriber,
    Prescription,
    PrescriptionLine,
    Product,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bdpm-mini"
DOLIPRANE = "60234100"
DOLIPRANE_CIP13 = "3400935955838"
SERETIDE_LIKE = "61041232"  # fluticasone + salmeterol
RPPS = "10000000009"
TODAY = date.today()


def line(**changes: Any) -> PrescriptionLine:
    return PrescriptionLine(**{"cis": DOLIPRANE, **changes})


def prescription(*lines: PrescriptionLine, **changes: Any) -> Prescription:
    fields: dict[str, Any] = {
        "patient_id": "p1",
        "prescriber": Prescriber(name="Dr Martin", rpps=RPPS),
        "prescribed_on": date(2024, 1, 10),
        "lines": lines or (line(),),
    }
    fields.update(changes)
    return Prescription(**fields)


PARA = Product(cis=DOLIPRANE, name="DOLIPRANE", atc="N02BE01", substances=(("02202", "PARA"),))


# --------------------------------------------------------------------------- pure rules


def test_add_months_clamps_to_month_end() -> None:
    assert logic.add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert logic.add_months(date(2024, 11, 15), 3) == date(2025, 2, 15)


def test_mandatory_errors_are_all_reported() -> None:
    bad = prescription(
        PrescriptionLine(),
        PrescriptionLine(cis="123", cip13="3400935955839", posology=Posology(dose=1)),
        prescriber=Prescriber(name="X", rpps="12345678901"),
        prescribed_on=TODAY + timedelta(days=1),
    )
    keys = {e.key for e in logic.mandatory_errors(bad, TODAY)}
    assert keys == {
        "prescriber.rpps",
        "prescribed_on",
        "lines.0",
        "lines.1.cis",
        "lines.1.cip13",
        "lines.1.posology.unit",
    }
    assert logic.mandatory_errors(prescription(lines=()), TODAY)[0].key == "lines"


def test_validation_findings() -> None:
    p = prescription(
        line(posology=Posology(dose=1, unit="comprimé", times_per_day=3)),
        line(cis="99999999"),
        line(posology=Posology(dose=1, unit="comprimé", times_per_day=3)),
        PrescriptionLine(label="Préparation magistrale", posology=Posology(as_needed=True)),
    )
    report = logic.validate(p, {0: PARA, 1: None, 2: PARA}, date(2024, 2, 1))
    codes = {(f.code, f.line) for f in report.findings}
    assert ("unknown_product", 1) in codes
    assert ("duplicate_line", 2) in codes
    assert ("free_text_product", 3) in codes
    assert ("posology_incomplete", 1) in codes
    assert not report.valid
    assert report.posology_range[0].startswith("not checked")
    expired = logic.validate(p, {0: PARA, 1: PARA, 2: PARA}, date(2024, 4, 11))
    assert any(f.code == "expired" for f in expired.findings)
    on_time = logic.validate(prescription(), {0: PARA}, date(2024, 4, 10))
    assert not any(f.code == "expired" for f in on_time.findings)


def test_treatment_end_counts_renewals() -> None:
    monthly = line(posology=Posology(duration=Duration(value=1, unit="month")))
    p = prescription(monthly, renewals=5)
    assert logic.treatment_end(p) == date(2024, 7, 10)
    assert logic.treatment_end(prescription()) == date(2024, 4, 10)  # validity
    weeks = prescription(line(posology=Posology(duration=Duration(value=2, unit="week"))))
    assert logic.treatment_end(weeks) == date(2024, 1, 24)


# --------------------------------------------------------------------------- API


@pytest.fixture
def catalog(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["catalog", "import", str(FIXTURE)])
    assert result.exit_code == 0, result.output


@pytest.fixture
def headers(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('patients:read', 'patients:write')}"}


def new_patient(client: Any, headers: dict[str, str], born: str = "1950-03-02") -> str:
    body = {
        "identity": {
            "birth_family_name": "DURAND",
            "given_names": "Paul",
            "birth_date": born,
            "sex": "M",
        }
    }
    response = client.post("/api/v1/patients", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def body(patient_id: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "patient_id": patient_id,
        "prescriber": {"name": "Dr Martin", "rpps": RPPS, "specialty": "médecine générale"},
        "prescribed_on": (TODAY - timedelta(days=10)).isoformat(),
        "renewals": 2,
        "lines": [
            {
                "cip13": DOLIPRANE_CIP13,
                "posology": {
                    "dose": 1,
                    "unit": "comprimé",
                    "times_per_day": 3,
                    "times_of_day": ["morning", "noon", "evening"],
                    "duration": {"value": 1, "unit": "month"},
                },
                "original_text": "Doliprane 1000 : 1 cp matin, midi et soir pendant 1 mois",
            },
            {
                "cis": SERETIDE_LIKE,
                "posology": {"dose": 1, "unit": "inhalation", "times_per_day": 2},
            },
        ],
    }
    data.update(changes)
    return data


def audit_of(platform: Platform, object_type: str) -> list[tuple[str, str, str]]:
    return [
        (e.action, e.object_id, e.outcome)
        for e in platform.audit.entries()
        if e.object_type == object_type
    ]


def test_prescription_lifecycle_is_versioned_and_audited(
    catalog: None, client: Any, headers: dict[str, str], platform: Platform
) -> None:
    pid = new_patient(client, headers)
    created = client.post("/api/v1/prescriptions", json=body(pid), headers=headers)
    assert created.status_code == 201, created.text
    view = created.json()
    rx = view["id"]
    assert view["version"] == 1
    assert view["validation"]["valid"] is True
    checked, inhaled = view["validation"]["posology_range"]
    assert checked.startswith("checked: 3000 mg/day within the maximum of 4000 mg/day for adults")
    assert "RCP DOLIPRANE" in checked
    assert inhaled == logic.POSOLOGY_NOT_CHECKED
    assert view["treatment_end"] == logic.add_months(TODAY - timedelta(days=10), 3).isoformat()

    changed = body(pid, renewals=0, expected_version=1)
    updated = client.put(f"/api/v1/prescriptions/{rx}", json=changed, headers=headers)
    assert updated.status_code == 200, updated.text
    stale = client.put(f"/api/v1/prescriptions/{rx}", json=changed, headers=headers)
    assert stale.status_code == 409
    history = client.get(f"/api/v1/prescriptions/{rx}/history", headers=headers).json()
    assert [(v["version"], v["renewals"], v["recorded_by"]) for v in history] == [
        (1, 2, "user-test"),
        (2, 0, "user-test"),
    ]
    listed = client.get(f"/api/v1/patients/{pid}/prescriptions", headers=headers).json()
    assert [item["id"] for item in listed] == [rx]
    meds = active_medications(platform.store, pid, TODAY)
    assert {m.cis for m in meds} == {DOLIPRANE, SERETIDE_LIKE}
    combo = next(m for m in meds if m.cis == SERETIDE_LIKE)
    assert len(combo.substances) == 2

    voided = client.delete(f"/api/v1/prescriptions/{rx}?expected_version=2", headers=headers)
    assert voided.status_code == 200
    assert voided.json()["deleted"] is True
    assert client.get(f"/api/v1/patients/{pid}/prescriptions", headers=headers).json() == []
    assert client.get(f"/api/v1/prescriptions/{rx}", headers=headers).json()["version"] == 3

    entries = audit_of(platform, "prescription")
    assert ("create", rx, "success") in entries
    assert ("update", rx, "success") in entries
    assert ("update", rx, "conflict") in entries
    assert ("history", rx, "success") in entries
    assert ("void", rx, "success") in entries
    assert ("read", rx, "success") in entries
    assert ("read_prescriptions", pid, "success") in audit_of(platform, "patient")
    for entry in platform.audit.entries():
        assert "Martin" not in repr(entry)
        assert "Doliprane" not in repr(entry)


def test_validation_report_and_bad_input(
    catalog: None, client: Any, headers: dict[str, str], platform: Platform
) -> None:
    pid = new_patient(client, headers)
    old = (TODAY - timedelta(days=200)).isoformat()
    lines = [{"cis": DOLIPRANE}, {"cis": "99999999"}, {"cis": DOLIPRANE}]
    created = client.post(
        "/api/v1/prescriptions", json=body(pid, prescribed_on=old, lines=lines), headers=headers
    )
    assert created.status_code == 201, created.text
    codes = {(f["code"], f["line"]) for f in created.json()["validation"]["findings"]}
    assert {("expired", None), ("unknown_product", 1), ("duplicate_line", 2)} <= codes

    missing = client.post(
        "/api/v1/prescriptions",
        json=body("00000000-0000-0000-0000-000000000000", lines=[]),
        headers=headers,
    )
    assert missing.status_code == 400
    keys = {e["key"] for e in missing.json()["errors"]}
    assert keys == {"lines", "patient_id"}
    no_prescriber = body(pid)
    del no_prescriber["prescriber"]
    assert (
        client.post("/api/v1/prescriptions", json=no_prescriber, headers=headers).status_code == 400
    )
    unknown = client.get(
        "/api/v1/prescriptions/00000000-0000-0000-0000-000000000001", headers=headers
    )
    assert unknown.status_code == 404
    assert ("read", "00000000-0000-0000-0000-000000000001", "not_found") in audit_of(
        platform, "prescription"
    )
    reader = {"Authorization": headers["Authorization"]}
    assert (
        client.get(
            f"/api/v1/patients/{pid}/prescriptions?active_only=true", headers=reader
        ).status_code
        == 200
    )


def test_redundancy_across_prescriptions_uses_the_analysis_engine(
    catalog: None, client: Any, headers: dict[str, str], platform: Platform
) -> None:
    pid = new_patient(client, headers)
    for cis in ("60145580", "60519117"):  # simvastatine, then atorvastatine: same ATC class
        lines = [{"cis": cis, "posology": {"dose": 1, "unit": "comprimé", "times_per_day": 1}}]
        created = client.post("/api/v1/prescriptions", json=body(pid, lines=lines), headers=headers)
        assert created.status_code == 201, created.text
    same = [{"cis": DOLIPRANE}, {"cis": "67017786"}]  # paracétamol twice, two products
    assert (
        client.post(
            "/api/v1/prescriptions", json=body(pid, lines=same), headers=headers
        ).status_code
        == 201
    )
    response = client.get(f"/api/v1/patients/{pid}/prescriptions/redundancies", headers=headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert len(result["medications"]) == 4
    atc_sets = [sorted(f["atc"]) for f in result["findings"]]
    assert ["N02BE01"] in atc_sets
    assert any(len(atc) == 2 and all(a.startswith("C10AA") for a in atc) for atc in atc_sets)
    assert ("read_redundancies", pid, "success") in audit_of(platform, "patient")


def _product(name: str, moiety: str, *more: str) -> Product:
    substances = tuple((str(i), n) for i, n in enumerate((moiety, *more)))
    return Product(cis="60000000", name=name, atc=None, substances=substances)


def test_daily_dose_against_the_rcp_maximum() -> None:
    table = doses.load_table()
    zolpidem = _product("STILNOX 10 mg, comprimé pelliculé sécable", "TARTRATE DE ZOLPIDEM")
    one = Posology(dose=1, unit="comprimé", times_of_day=("bedtime",))
    older = doses.check_line(one, zolpidem, 80, table)
    assert older.over
    assert "10 mg/day exceeds the maximum of 5 mg/day for 65 years and over" in older.text
    assert "not yet verified" in older.text
    younger = doses.check_line(one, zolpidem, 50, table)
    assert younger.checked
    assert not younger.over
    metformin = _product("GLUCOPHAGE 1000 mg, comprimé pelliculé", "CHLORHYDRATE DE METFORMINE")
    four = Posology(dose=1, unit="comprimés", times_per_day=4)
    assert doses.check_line(four, metformin, 70, table).over
    grams = Posology(dose=1, unit="g", times_per_day=3)
    assert not doses.check_line(grams, metformin, 70, table).over
    # Escitalopram is not citalopram; a combination and an unknown strength are not checked.
    esci = _product("SEROPLEX 10 mg", "OXALATE D'ESCITALOPRAM")
    assert (
        "20 mg/day"
        in doses.check_line(Posology(dose=20, unit="mg", times_per_day=1), esci, 70, table).text
    )
    combo = _product("X 5 mg/10 mg", "AMLODIPINE", "VALSARTAN")
    assert not doses.check_line(one, combo, 70, table).checked
    no_strength = _product("AMLOR, gélule", "AMLODIPINE")
    assert "cannot be computed" in doses.check_line(one, no_strength, 70, table).text
    assert doses.check_line(one, None, 70, table).text == "not checked: no catalog product"
    report = logic.validate(
        prescription(line(posology=Posology(dose=20, unit="mg", times_of_day=("bedtime",)))),
        {0: zolpidem},
        date(2024, 2, 1),
        age=80,
    )
    assert [f.code for f in report.findings] == ["dose_above_maximum"]
    assert report.valid  # a warning for the pharmacist, not a refusal


def test_the_dose_table_cites_a_source_for_every_value() -> None:
    table = doses.load_table()
    assert len(table.dose) >= 20
    names = [entry.substance for entry in table.dose]
    assert len(names) == len(set(names))
    for entry in table.dose:
        assert entry.source.startswith("RCP "), entry.substance
        assert "4.2" in entry.source, entry.substance
        assert entry.max_mg_per_day > 0
        assert (entry.max_mg_per_day_elderly is None) == (entry.elderly_from_age is None)
        if entry.max_mg_per_day_elderly is not None:
            assert entry.max_mg_per_day_elderly < entry.max_mg_per_day
