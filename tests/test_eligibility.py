"""BPM eligibility: the pure rule (edge cases), the rule file, and the API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appliance.cli import main
from appliance.platform import Platform
from services.patients import SubstancePeriod, bpm_eligibility, rule_in_force
from services.patients.eligibility import RULE_FILE, add_months, age_on, load_rules

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bdpm-mini"
AS_OF = date(2025, 6, 1)
BORN_65 = date(1960, 6, 1)  # exactly 65 on AS_OF


def period(code: str, start: date, end: date) -> SubstancePeriod:
    return SubstancePeriod(substance=code, name=code, start=start, end=end, source=f"test:{code}")


def five(start: date, end: date, n: int = 5) -> list[SubstancePeriod]:
    return [period(f"S{i}", start, end) for i in range(n)]


def test_exactly_65_and_exactly_6_months() -> None:
    start = add_months(AS_OF, -6)
    result = bpm_eligibility(BORN_65, five(start, AS_OF), AS_OF)
    assert result.eligible, result.reasons
    assert result.age == 65
    assert result.substance_count == 5
    one_day_short = bpm_eligibility(BORN_65, five(start, AS_OF - timedelta(days=1)), AS_OF)
    assert not one_day_short.eligible
    assert "fewer than 5" in one_day_short.reasons[1]
    day_before_birthday = bpm_eligibility(BORN_65, five(start, AS_OF), AS_OF - timedelta(days=1))
    assert day_before_birthday.age == 64
    assert not day_before_birthday.eligible


def test_planned_period_counts_and_four_substances_do_not() -> None:
    planned = five(AS_OF - timedelta(days=10), add_months(AS_OF - timedelta(days=10), 6))
    assert bpm_eligibility(BORN_65, planned, AS_OF).eligible
    four = five(add_months(AS_OF, -7), AS_OF, n=4)
    assert not bpm_eligibility(BORN_65, four, AS_OF).eligible
    later = five(AS_OF + timedelta(days=1), add_months(AS_OF, 8))
    assert bpm_eligibility(BORN_65, later, AS_OF).substance_count == 0


def test_periods_merge_across_sources_within_the_gap() -> None:
    first = [period("S1", date(2024, 11, 1), date(2025, 1, 31))]
    second = [period("S1", date(2025, 2, 10), date(2025, 5, 31))]
    result = bpm_eligibility(BORN_65, first + second, AS_OF)
    assert result.substances[0].qualifies
    assert result.substances[0].sources == ["test:S1", "test:S1"]
    far = [period("S1", date(2025, 3, 1), date(2025, 5, 31))]
    assert not bpm_eligibility(BORN_65, first + far, AS_OF).substances[0].qualifies


def test_age_on_leap_day_and_rule_file() -> None:
    assert age_on(date(1960, 2, 29), date(2025, 2, 28)) == 64
    assert age_on(date(1960, 2, 29), date(2025, 3, 1)) == 65
    rules = load_rules(RULE_FILE)
    assert rules[0].min_age_years == 65
    assert rules[0].min_substances == 5
    assert rules[0].min_months == 6
    assert "2024" in rules[0].source
    assert rule_in_force(AS_OF).id == rules[-1].id


def test_an_amendment_is_a_data_change(tmp_path: Path) -> None:
    amended = RULE_FILE.read_text(encoding="utf-8") + (
        '\n[[rules]]\nid = "future"\nin_force_from = 2030-01-01\nsource = "test"\n'
        "min_age_years = 70\nmin_substances = 5\nmin_months = 6\n"
    )
    path = tmp_path / "rules.toml"
    path.write_text(amended, encoding="utf-8")
    rules = load_rules(path)
    assert rule_in_force(date(2031, 1, 1), rules).id == "future"
    assert rule_in_force(AS_OF, rules).min_age_years == 65


# --------------------------------------------------------------------------- API

COMBO = "61041232"  # fluticasone + salmeterol: two substances
SINGLE = ["60234100", "60145580", "61200859"]  # paracétamol, simvastatine, alprazolam
RPPS = "10000000009"


@pytest.fixture
def catalog(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["catalog", "import", str(FIXTURE)])
    assert result.exit_code == 0, result.output


@pytest.fixture
def headers(token_for: Callable[..., str]) -> dict[str, str]:
    token = token_for("patients:read", "patients:write", "bpm:read", "bpm:write")
    return {"Authorization": f"Bearer {token}"}


def _patient(client: Any, headers: dict[str, str], born: str, name: str) -> str:
    body = {
        "identity": {"birth_family_name": name, "given_names": "A", "birth_date": born, "sex": "F"}
    }
    response = client.post("/api/v1/patients", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _prescribe(client: Any, headers: dict[str, str], pid: str, cis_list: list[str]) -> None:
    start = date.today() - timedelta(days=20)
    body = {
        "patient_id": pid,
        "prescriber": {"name": "Dr X", "rpps": RPPS},
        "prescribed_on": start.isoformat(),
        "renewals": 5,
        "lines": [
            {
                "cis": cis,
                "posology": {
                    "dose": 1,
                    "unit": "u",
                    "times_per_day": 1,
                    "duration": {"value": 1, "unit": "month"},
                },
            }
            for cis in cis_list
        ],
    }
    response = client.post("/api/v1/prescriptions", json=body, headers=headers)
    assert response.status_code == 201, response.text


def test_eligible_list_counts_combinations_and_skips_enrolled(
    catalog: None, client: Any, headers: dict[str, str], platform: Platform
) -> None:
    old = (date.today() - timedelta(days=366 * 80)).isoformat()
    young = (date.today() - timedelta(days=366 * 50)).isoformat()
    eligible = _patient(client, headers, old, "ALPHA")
    _prescribe(client, headers, eligible, [*SINGLE, COMBO])  # 3 + 2 = 5 substances
    too_few = _patient(client, headers, old, "BETA")
    _prescribe(client, headers, too_few, SINGLE)
    too_young = _patient(client, headers, young, "GAMMA")
    _prescribe(client, headers, too_young, [*SINGLE, COMBO])
    # Dispensing history counts too: 7 boxes of 30 days of a fourth substance.
    dispensed = client.post(
        f"/api/v1/patients/{too_few}/dispensings",
        json={
            "dispensed_on": (date.today() - timedelta(days=200)).isoformat(),
            "quantity": 7,
            "cis": "60474483",
        },
        headers=headers,
    )
    assert dispensed.status_code == 201, dispensed.text

    listed = client.get("/api/v1/bpm/eligible", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [v["patient_id"] for v in listed.json()] == [eligible]
    assert listed.json()[0]["eligibility"]["substance_count"] == 5

    one = client.get(f"/api/v1/patients/{too_few}/bpm-eligibility", headers=headers).json()
    assert one["eligibility"]["eligible"] is False
    assert one["eligibility"]["substance_count"] == 4
    assert any("fewer than 5" in r for r in one["eligibility"]["reasons"])

    consent = {"kind": "bpm_adhesion", "status": "granted", "decided_on": "2024-01-05"}
    current = client.get(f"/api/v1/patients/{eligible}", headers=headers).json()
    update = {
        "identity": current["identity"],
        "consents": [consent],
        "expected_version": current["version"],
    }
    assert (
        client.put(f"/api/v1/patients/{eligible}", json=update, headers=headers).status_code == 200
    )
    opened = client.post("/api/v1/bpm", json={"patient_id": eligible}, headers=headers)
    assert opened.status_code == 201, opened.text
    assert client.get("/api/v1/bpm/eligible", headers=headers).json() == []

    actions = [
        (e.action, e.object_id, e.outcome)
        for e in platform.audit.entries()
        if e.action == "bpm_eligibility"
    ]
    assert ("bpm_eligibility", eligible, "success") in actions
    assert ("bpm_eligibility", too_few, "success") in actions
    assert ("bpm_eligibility", "", "no_match") in actions
    missing = client.get(
        "/api/v1/patients/00000000-0000-0000-0000-000000000000/bpm-eligibility", headers=headers
    )
    assert missing.status_code == 404
