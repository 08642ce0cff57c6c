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
    rest: tuple[StepKind, ...] = ("analyse", "transmission", "conseil", "observance")
    for i, kind in enumerate(rest):
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


# --------------------------------------------------------------------------- follow-ups


def test_follow_ups_are_planned_by_the_pharmacist_and_done_with_their_step() -> None:
    cycle = bpm.open_cycle("p1", [], opened_on=date(2025, 6, 1), today=TODAY, consent=None)
    cycle = step(cycle, "adhesion", date(2025, 6, 2))
    planned = bpm.plan_follow_up(
        cycle, "recueil", due_on=date(2025, 7, 15), planned_by="pharma-1", today=TODAY
    )
    planned = bpm.plan_follow_up(
        planned, "analyse", due_on=TODAY, planned_by="pharma-2", today=TODAY
    )
    assert [(f.kind, f.due_on) for f in planned.follow_ups] == [
        ("analyse", TODAY),
        ("recueil", date(2025, 7, 15)),
    ]
    replanned = bpm.plan_follow_up(
        planned, "recueil", due_on=date(2025, 7, 1), planned_by="pharma-2", today=TODAY
    )
    assert [(f.kind, f.due_on, f.planned_by) for f in replanned.follow_ups] == [
        ("analyse", TODAY, "pharma-2"),
        ("recueil", date(2025, 7, 1), "pharma-2"),
    ]
    # Days later the recueil is late; the analyse due that day is not yet.
    views = bpm.follow_up_views(replanned, date(2025, 7, 2))
    assert [(v.kind, v.done, v.overdue) for v in views] == [
        ("analyse", False, True),
        ("recueil", False, True),
    ]
    assert [v.overdue for v in bpm.follow_up_views(replanned, TODAY)] == [False, False]
    done = step(replanned, "recueil", TODAY)
    views = bpm.follow_up_views(done, date(2025, 7, 2))
    assert [(v.kind, v.done, v.done_on, v.overdue) for v in views] == [
        ("analyse", False, None, True),
        ("recueil", True, TODAY, False),
    ]
    cancelled = bpm.cancel_follow_up(done, "analyse")
    assert [f.kind for f in cancelled.follow_ups] == ["recueil"]
    abandoned = bpm.abandon(replanned, closed_on=TODAY, reason="other", today=TODAY)
    assert not any(v.overdue for v in bpm.follow_up_views(abandoned, date(2026, 1, 1)))


def test_follow_up_refusals() -> None:
    cycle = bpm.open_cycle("p1", [], opened_on=date(2025, 6, 1), today=TODAY, consent=None)
    cycle = step(cycle, "adhesion", date(2025, 6, 2))

    def refused(change: Callable[[], BpmCycle]) -> tuple[int, str]:
        with pytest.raises(BpmRuleError) as caught:
            change()
        return caught.value.status, caught.value.slug

    def plan(c: BpmCycle, kind: StepKind, due: date) -> BpmCycle:
        return bpm.plan_follow_up(c, kind, due_on=due, planned_by="pharma-1", today=TODAY)

    assert refused(lambda: plan(cycle, "recueil", date(2025, 6, 29))) == (400, "bpm-date")
    assert refused(lambda: plan(cycle, "adhesion", date(2025, 7, 1))) == (409, "bpm-step-done")
    assert refused(lambda: plan(cycle, "suivi", date(2025, 7, 1))) == (400, "bpm-follow-up-kind")
    assert refused(lambda: bpm.cancel_follow_up(cycle, "recueil")) == (404, "not-found")
    assert refused(lambda: bpm.cancel_follow_up(cycle, "adhesion")) == (409, "bpm-step-done")
    closed = first_year()
    assert refused(lambda: plan(closed, "observance", TODAY)) == (409, "bpm-closed")


def test_follow_ups_over_http(client: Any, headers: dict[str, str], platform: Platform) -> None:
    from datetime import timedelta

    from services.patients.api import today

    now = today(platform)
    pid = client.post("/api/v1/patients", json=PATIENT, headers=headers).json()["id"]
    cycle = client.post("/api/v1/bpm", json={"patient_id": pid}, headers=headers).json()
    cid = cycle["id"]
    assert cycle["follow_ups"] == []

    def plan(version: int, kind: str, due: date) -> Any:
        body = {"expected_version": version, "kind": kind, "due_on": due.isoformat()}
        return client.post(f"/api/v1/bpm/{cid}/follow-ups", json=body, headers=headers)

    planned = plan(1, "adhesion", now)
    assert planned.status_code == 200, planned.text
    first = planned.json()["follow_ups"]
    assert first == [
        {
            "kind": "adhesion",
            "due_on": now.isoformat(),
            "planned_by": "user-test",
            "planned_on": now.isoformat(),
            "done": False,
            "done_on": None,
            "overdue": False,
        }
    ]
    later = now + timedelta(days=30)
    replanned = plan(2, "recueil", later).json()
    assert [f["kind"] for f in replanned["follow_ups"]] == ["adhesion", "recueil"]
    past = plan(3, "recueil", now - timedelta(days=1))
    assert past.status_code == 400
    assert past.json()["type"] == "urn:hygie:problem:bpm-date"
    assert plan(3, "rappel", later).status_code == 400  # not a step kind
    assert plan(3, "suivi", later).status_code == 400  # not a step of a first year
    assert plan(1, "recueil", later).status_code == 409  # stale version

    due = client.get("/api/v1/bpm/follow-ups", params={"within_days": 0}, headers=headers)
    assert due.status_code == 200, due.text
    mine = [d for d in due.json() if d["cycle_id"] == cid]
    assert [(d["patient_id"], d["follow_up"]["kind"]) for d in mine] == [(pid, "adhesion")]
    wider = client.get("/api/v1/bpm/follow-ups", params={"within_days": 31}, headers=headers)
    assert [d["follow_up"]["kind"] for d in wider.json() if d["cycle_id"] == cid] == [
        "adhesion",
        "recueil",
    ]

    stepped = client.post(
        f"/api/v1/bpm/{cid}/steps",
        json={"expected_version": 3, "kind": "adhesion", "performed_on": now.isoformat()},
        headers=headers,
    ).json()
    assert stepped["follow_ups"][0]["done"] is True
    assert stepped["follow_ups"][0]["done_on"] == now.isoformat()
    again = plan(4, "adhesion", later)
    assert again.status_code == 409
    assert again.json()["type"] == "urn:hygie:problem:bpm-step-done"
    cancel = f"/api/v1/bpm/{cid}/follow-ups/cancel"
    gone = client.post(cancel, json={"expected_version": 4, "kind": "recueil"}, headers=headers)
    assert gone.status_code == 200, gone.text
    assert [f["kind"] for f in gone.json()["follow_ups"]] == ["adhesion"]
    missing = client.post(cancel, json={"expected_version": 5, "kind": "recueil"}, headers=headers)
    assert missing.status_code == 404
    history = client.get(f"/api/v1/bpm/{cid}/history", headers=headers).json()
    assert [len(v["follow_ups"]) for v in history] == [0, 1, 2, 2, 1]

    audited = [
        (e.action, e.outcome)
        for e in platform.audit.entries(limit=1000)
        if e.object_type == "bpm_cycle" and e.object_id == cid
    ]
    assert ("plan", "success") in audited
    assert ("plan", "refused") in audited
    assert ("cancel_plan", "success") in audited
    assert ("search", "success") in audited
