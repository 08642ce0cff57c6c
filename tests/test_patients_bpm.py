"""BPM cycles: the state machine as pure rules, then the whole flow over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import msgspec
import pytest

from appliance.fieldcrypto import FieldCipher
from appliance.platform import Platform
from services.patients import bpm
from services.patients.bpm import BpmCycle, BpmRuleError, StepKind
from services.patients.models import Consent

TODAY = date(2025, 6, 30)
GRANTED = Consent(kind="bpm_adhesion", status="granted", decided_on=date(2024, 1, 5))
WITHDRAWN = Consent(kind="bpm_adhesion", status="withdrawn", decided_on=date(2024, 3, 1))


def step(
    cycle: BpmCycle,
    kind: StepKind,
    on: date,
    *,
    changed: bool | None = None,
    consent: Consent | None = GRANTED,
) -> BpmCycle:
    return bpm.record_step(
        cycle,
        kind,
        performed_on=on,
        pharmacist="pharma-1",
        notes=f"notes {kind}",
        treatments_changed=changed,
        today=TODAY,
        consent=consent,
    )


def first_year(opened: date = date(2024, 1, 10)) -> BpmCycle:
    cycle = bpm.open_cycle("p1", [], opened_on=opened, today=TODAY, consent=None)
    for i, kind in enumerate(bpm.INITIAL_STEPS):
        assert bpm.next_step(cycle) == kind
        cycle = step(cycle, kind, date(2024, 1, 10 + i))
    return cycle


# --------------------------------------------------------------------------- pure rules


def test_first_year_goes_through_every_step_in_order() -> None:
    cycle = bpm.open_cycle("p1", [], opened_on=date(2024, 1, 10), today=TODAY, consent=None)
    assert cycle.year == 1
    assert [v.state for v in bpm.step_views(cycle)] == ["pending"] * 6
    with pytest.raises(BpmRuleError) as refused:
        step(cycle, "analyse", date(2024, 1, 10))
    assert (refused.value.status, refused.value.slug) == (409, "bpm-step-order")
    done = first_year()
    assert done.status == "completed"
    assert done.closed_on == date(2024, 1, 15)
    assert bpm.next_step(done) is None
    assert [s.kind for s in done.steps] == list(bpm.INITIAL_STEPS)
    with pytest.raises(BpmRuleError, match="completed"):
        step(done, "observance", date(2024, 2, 1))


def test_step_dates_and_consent() -> None:
    cycle = bpm.open_cycle("p1", [], opened_on=date(2024, 1, 10), today=TODAY, consent=None)
    for on in (date(2024, 1, 9), date(2025, 7, 1)):
        with pytest.raises(BpmRuleError) as refused:
            step(cycle, "adhesion", on)
        assert refused.value.status == 400
    for consent in (None, WITHDRAWN):
        with pytest.raises(BpmRuleError) as refused:
            step(cycle, "adhesion", date(2024, 3, 2), consent=consent)
        assert refused.value.slug == "bpm-consent"
    late = Consent(kind="bpm_adhesion", status="granted", decided_on=date(2024, 2, 1))
    with pytest.raises(BpmRuleError, match="dated after"):
        step(cycle, "adhesion", date(2024, 1, 20), consent=late)
    with pytest.raises(BpmRuleError, match="treatments_changed"):
        step(cycle, "adhesion", date(2024, 1, 20), changed=True)


def test_following_years() -> None:
    year1 = first_year()
    with pytest.raises(BpmRuleError) as early:
        bpm.open_cycle("p1", [year1], opened_on=date(2024, 11, 1), today=TODAY, consent=GRANTED)
    assert early.value.slug == "bpm-too-early"
    with pytest.raises(BpmRuleError, match="consent"):
        bpm.open_cycle("p1", [year1], opened_on=date(2025, 1, 2), today=TODAY, consent=WITHDRAWN)
    year2 = bpm.open_cycle("p1", [year1], opened_on=date(2025, 1, 2), today=TODAY, consent=GRANTED)
    assert year2.year == 2
    assert bpm.next_step(year2) == "suivi"
    with pytest.raises(BpmRuleError) as missing:
        step(year2, "suivi", date(2025, 1, 3))
    assert missing.value.slug == "bpm-treatments-changed"
    unchanged = step(year2, "suivi", date(2025, 1, 3), changed=False)
    assert bpm.planned_steps(unchanged) == ("suivi", "observance")
    assert step(unchanged, "observance", date(2025, 2, 1)).status == "completed"

    changed = step(year2, "suivi", date(2025, 1, 3), changed=True)
    assert bpm.next_step(changed) == "analyse"
    for i, kind in enumerate(("analyse", "transmission", "conseil", "observance")):
        changed = step(changed, kind, date(2025, 1, 4 + i))
    assert changed.status == "completed"
    with pytest.raises(BpmRuleError, match="already has a BPM in progress"):
        bpm.open_cycle("p1", [year1, year2], opened_on=TODAY, today=TODAY, consent=GRANTED)


def test_abandon_and_restart() -> None:
    cycle = bpm.open_cycle("p1", [], opened_on=date(2024, 1, 10), today=TODAY, consent=None)
    cycle = step(cycle, "adhesion", date(2024, 1, 10))
    stopped = bpm.abandon(cycle, closed_on=date(2024, 2, 1), reason="patient_moved", today=TODAY)
    assert stopped.status == "abandoned"
    assert [v.state for v in bpm.step_views(stopped)] == ["done"] + ["not_required"] * 5
    with pytest.raises(BpmRuleError):
        bpm.abandon(stopped, closed_on=date(2024, 2, 1), reason="other", today=TODAY)
    again = bpm.open_cycle("p1", [stopped], opened_on=date(2024, 3, 1), today=TODAY, consent=None)
    assert again.year == 1, "an abandoned cycle does not count"


def test_step_notes_are_sealed_per_cycle_and_step() -> None:
    cipher = FieldCipher(bytes(range(32)))
    cycle = first_year()
    stored = bpm.seal_cycle("c1", cycle, cipher)
    assert "notes recueil" not in msgspec.json.encode(stored).decode()
    assert bpm.unseal_cycle(stored, cipher) == cycle
    with pytest.raises(Exception, match="moved"):
        bpm.unseal_cycle(msgspec.structs.replace(stored, cycle_id="c2"), cipher)


# --------------------------------------------------------------------------- over HTTP

PATIENT = {
    "identity": {
        "birth_family_name": "Durand",
        "given_names": "Paul",
        "birth_date": "1940-02-03",
        "sex": "M",
    },
    "consents": [{"kind": "bpm_adhesion", "status": "granted", "decided_on": "2024-01-05"}],
}


@pytest.fixture
def headers(token_for: Callable[..., str]) -> dict[str, str]:
    token = token_for("patients:read", "patients:write", "bpm:read", "bpm:write")
    return {"Authorization": f"Bearer {token}"}


def test_bpm_over_http(client: Any, headers: dict[str, str], platform: Platform) -> None:
    patient = client.post("/api/v1/patients", json=PATIENT, headers=headers).json()
    pid = patient["id"]
    opened = client.post(
        "/api/v1/bpm", json={"patient_id": pid, "opened_on": "2024-01-10"}, headers=headers
    )
    assert opened.status_code == 201, opened.text
    cycle = opened.json()
    cid = cycle["id"]
    assert (cycle["year"], cycle["status"], cycle["next_step"]) == (1, "in_progress", "adhesion")
    assert client.post("/api/v1/bpm", json={"patient_id": pid}, headers=headers).status_code == 409

    version = 1
    for i, kind in enumerate(bpm.INITIAL_STEPS):
        body = {
            "expected_version": version,
            "kind": kind,
            "performed_on": f"2024-01-{10 + i}",
            "notes": f"Entretien {kind} : patient très observant",
        }
        response = client.post(f"/api/v1/bpm/{cid}/steps", json=body, headers=headers)
        assert response.status_code == 200, response.text
        version = response.json()["version"]
    done = response.json()
    assert done["status"] == "completed"
    assert done["steps"][1]["pharmacist"] == "user-test"
    assert done["steps"][1]["notes"] == "Entretien recueil : patient très observant"

    stale = client.post(
        f"/api/v1/bpm/{cid}/steps",
        json={"expected_version": 1, "kind": "recueil", "performed_on": "2024-02-01"},
        headers=headers,
    )
    assert stale.status_code == 409
    closed = client.post(
        f"/api/v1/bpm/{cid}/steps",
        json={"expected_version": version, "kind": "observance", "performed_on": "2024-02-01"},
        headers=headers,
    )
    assert closed.status_code == 409
    assert closed.json()["type"] == "urn:hygie:problem:bpm-closed"

    history = client.get(f"/api/v1/bpm/{cid}/history", headers=headers).json()
    assert [len([s for s in v["steps"] if s["state"] == "done"]) for v in history] == list(range(7))
    year2 = client.post(
        "/api/v1/bpm", json={"patient_id": pid, "opened_on": "2025-01-03"}, headers=headers
    ).json()
    assert (year2["year"], year2["next_step"]) == (2, "suivi")
    listed = client.get("/api/v1/bpm", params={"patient_id": pid}, headers=headers).json()
    assert [c["year"] for c in listed] == [1, 2]
    assert client.get(f"/api/v1/bpm/{cid}", headers=headers).json() == done

    rows = platform.store.db.execute("SELECT data FROM bpm_cycles_versions").fetchall()
    assert all("très observant" not in row[0] for row in rows)
    audited = [
        (e.action, e.object_id, e.outcome)
        for e in platform.audit.entries(limit=1000)
        if e.object_type == "bpm_cycle"
    ]
    assert audited[0] == ("create", cid, "success")
    assert ("history", cid, "success") in audited
    assert ("read", cid, "success") in audited
    assert ("search", year2["id"], "success") in audited
    assert ("record_step", cid, "conflict") in audited


def test_bpm_refusals_over_http(
    client: Any, headers: dict[str, str], token_for: Callable[..., str]
) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    assert (
        client.post("/api/v1/bpm", json={"patient_id": missing}, headers=headers).status_code == 404
    )
    no_consent = {**PATIENT, "consents": []}
    pid = client.post("/api/v1/patients", json=no_consent, headers=headers).json()["id"]
    cid = client.post("/api/v1/bpm", json={"patient_id": pid}, headers=headers).json()["id"]
    refused = client.post(
        f"/api/v1/bpm/{cid}/steps",
        json={"expected_version": 1, "kind": "adhesion", "performed_on": "2024-01-10"},
        headers=headers,
    )
    assert refused.status_code == 400  # before the cycle was opened (today)
    today = date.today().isoformat()
    refused = client.post(
        f"/api/v1/bpm/{cid}/steps",
        json={"expected_version": 1, "kind": "adhesion", "performed_on": today},
        headers=headers,
    )
    assert refused.status_code == 409
    assert refused.json()["type"] == "urn:hygie:problem:bpm-consent"
    abandoned = client.post(
        f"/api/v1/bpm/{cid}/abandon",
        json={"expected_version": 1, "closed_on": today, "reason": "patient_withdrew"},
        headers=headers,
    )
    assert abandoned.status_code == 200
    assert abandoned.json()["status"] == "abandoned"
    assert client.get(f"/api/v1/bpm/{missing}", headers=headers).status_code == 404
    reader = {"Authorization": f"Bearer {token_for('patients:read', 'patients:write')}"}
    assert client.get(f"/api/v1/bpm/{cid}", headers=reader).status_code == 403
