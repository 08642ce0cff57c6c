"""Counter workstations through the HTTP API: versions, history, rules, audit."""

from __future__ import annotations

from typing import Any

from appliance.platform import Platform
from services.workstations.logic import reader_conflict
from services.workstations.models import Workstation


def test_reader_conflict_rule_is_pure() -> None:
    one = Workstation(code="c1", label="Comptoir 1", card_reader="Reader A")
    two = Workstation(code="c2", label="Comptoir 2", card_reader="Reader A")
    assert reader_conflict(two, [one]) == "c1"
    assert reader_conflict(one, [one]) is None
    retired = Workstation(code="c1", label="Comptoir 1", card_reader="Reader A", active=False)
    assert reader_conflict(two, [retired]) is None
    assert reader_conflict(Workstation(code="c3", label="x"), [one]) is None


def test_create_update_and_history(client: Any, auth: dict[str, str], platform: Platform) -> None:
    created = client.post(
        "/api/workstations",
        json={"code": "comptoir-1", "label": " Comptoir 1 ", "card_reader": "ACS ACR39U 00 00"},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    assert created.json()["label"] == "Comptoir 1"
    updated = client.put(
        "/api/workstations/comptoir-1",
        json={"expected_version": 1, "label": "Comptoir principal", "location": "entrée"},
        headers=auth,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    history = client.get("/api/workstations/comptoir-1/history", headers=auth).json()
    assert [item["label"] for item in history] == ["Comptoir 1", "Comptoir principal"]
    assert all(item["recorded_by"] == "user-test" for item in history)
    listed = client.get("/api/workstations", headers=auth).json()
    assert [item["code"] for item in listed] == ["comptoir-1"]
    actions = [(e.action, e.object_id, e.outcome) for e in platform.audit.entries()]
    assert actions == [("create", "comptoir-1", "success"), ("update", "comptoir-1", "success")]


def test_stale_update_is_409_and_changes_nothing(client: Any, auth: dict[str, str]) -> None:
    client.post("/api/workstations", json={"code": "c1", "label": "A"}, headers=auth)
    client.put("/api/workstations/c1", json={"expected_version": 1, "label": "B"}, headers=auth)
    stale = client.put(
        "/api/workstations/c1", json={"expected_version": 1, "label": "C"}, headers=auth
    )
    assert stale.status_code == 409
    assert stale.headers["content-type"].startswith("application/problem+json")
    assert stale.json()["latest_version"] == 2
    assert client.get("/api/workstations/c1", headers=auth).json()["label"] == "B"


def test_duplicate_code_is_409(client: Any, auth: dict[str, str]) -> None:
    assert (
        client.post(
            "/api/workstations", json={"code": "c1", "label": "A"}, headers=auth
        ).status_code
        == 201
    )
    again = client.post("/api/workstations", json={"code": "c1", "label": "B"}, headers=auth)
    assert again.status_code == 409
    assert client.get("/api/workstations/c1", headers=auth).json()["label"] == "A"


def test_reader_in_use_is_409(client: Any, auth: dict[str, str]) -> None:
    client.post(
        "/api/workstations", json={"code": "c1", "label": "A", "card_reader": "R1"}, headers=auth
    )
    clash = client.post(
        "/api/workstations", json={"code": "c2", "label": "B", "card_reader": "R1"}, headers=auth
    )
    assert clash.status_code == 409
    assert clash.json()["type"] == "urn:hygie:problem:reader-in-use"


def test_unknown_workstation_is_404(client: Any, auth: dict[str, str]) -> None:
    response = client.get("/api/workstations/absent", headers=auth)
    assert response.status_code == 404
    assert response.json()["type"] == "urn:hygie:problem:not-found"


def test_invalid_code_and_label_are_400(client: Any, auth: dict[str, str]) -> None:
    for body in (
        {"code": "Bad Code", "label": "A"},
        {"code": "c1", "label": ""},
        {"code": "c1", "label": "   "},
        {"code": "c1", "label": "A", "active": "yes"},
    ):
        response = client.post("/api/workstations", json=body, headers=auth)
        assert response.status_code == 400, body
        assert response.json()["errors"]
    assert client.get("/api/workstations/BAD%20CODE", headers=auth).status_code == 400
