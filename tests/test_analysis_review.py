"""The pharmacist's review of a stored analysis (issue 9): pure rules, the versioned store
through the HTTP API (audited, problem details), and durability across a server restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.config import Settings
from appliance.platform import Platform
from services.analysis import analysis_review
from services.analysis.logic import ReviewError, decide, propose
from services.analysis.models import AnalysisReview, Finding

VIGNETTES = Path(__file__).parent / "fixtures" / "vignettes"


def _finding(rule: str, gp: str = "") -> Finding:
    return Finding(
        kind="interaction",
        rule=rule,
        severity="avoid",
        atc=["B01AA03"],
        message=f"message {rule}",
        recommendation="conduite",
        confidence=0.9,
        evidence={},
        recommendation_gp=gp,
    )


def test_decisions_replace_each_other_and_keep_the_rule() -> None:
    findings = [_finding("R1", "G1"), _finding("R2", "G2")]
    review = AnalysisReview(analysis_id="an-0")
    review = decide(review, findings, 1, "dismissed", reason=" déjà vu ", rule="R2")
    review = decide(review, findings, 0, "accepted")
    assert [(d.index, d.rule, d.decision, d.text, d.reason) for d in review.decisions] == [
        (0, "R1", "accepted", "G1", ""),  # the engine's wording for the prescriber is kept
        (1, "R2", "dismissed", "", "déjà vu"),
    ]
    review = decide(review, findings, 0, "edited", text="Mon texte")
    assert [(d.index, d.decision, d.text) for d in review.decisions] == [
        (0, "edited", "Mon texte"),
        (1, "dismissed", ""),
    ]
    assert propose(review, "  Revoir la PA  ").proposals == ("Revoir la PA",)


@pytest.mark.parametrize(
    ("index", "decision", "text", "rule", "status", "code"),
    [
        (2, "accepted", "", None, 404, "finding-not-found"),
        (-1, "accepted", "", None, 404, "finding-not-found"),
        (0, "accepted", "", "R2", 409, "finding-mismatch"),
        (0, "edited", "   ", None, 400, "text-required"),
    ],
)
def test_decisions_that_cannot_stand_are_refused(
    index: int, decision: Any, text: str, rule: str | None, status: int, code: str
) -> None:
    with pytest.raises(ReviewError) as caught:
        decide(
            AnalysisReview(analysis_id="an-0"),
            [_finding("R1"), _finding("R2")],
            index,
            decision,
            text=text,
            rule=rule,
        )
    assert (caught.value.status, caught.value.code) == (status, code)


def test_an_empty_proposal_is_refused() -> None:
    with pytest.raises(ReviewError) as caught:
        propose(AnalysisReview(analysis_id="an-0"), " \n ")
    assert caught.value.status == 400


def _stored_analysis(client: Any, auth: dict[str, str]) -> dict[str, Any]:
    bundle = json.loads((VIGNETTES / "dose-doac-rivaroxaban.json").read_text())["bundle"]
    created = client.post("/api/v1/analyses", json=bundle, headers=auth)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    assert body["findings"]
    return body


def test_review_is_stored_versioned_audited_and_survives_a_restart(
    settings: Settings, client: Any, auth: dict[str, str], platform: Platform
) -> None:
    analysis = _stored_analysis(client, auth)
    base = f"/api/v1/analyses/{analysis['id']}/review"
    empty = client.get(base, headers=auth)
    assert empty.status_code == 200, empty.text
    assert empty.json()["version"] == 0
    assert empty.json()["decisions"] == []

    rule = analysis["findings"][0]["rule"]
    accepted = client.put(
        f"{base}/findings/0", json={"decision": "accepted", "rule": rule}, headers=auth
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["version"] == 1
    assert accepted.json()["recorded_by"] == "user-test"
    edited = client.put(
        f"{base}/findings/0", json={"decision": "edited", "text": "Réduire la dose"}, headers=auth
    )
    assert edited.status_code == 200, edited.text
    proposal = client.post(f"{base}/proposals", json={"text": "Bilan rénal"}, headers=auth)
    assert proposal.status_code == 201, proposal.text
    assert proposal.json()["version"] == 3

    # A new server process on the same store (a restart) reads the same review back.
    from appliance.app import create_app

    with TestClient(app=create_app(settings)) as restarted:
        again = restarted.get(base, headers=auth).json()
    assert again["version"] == 3
    assert [(d["index"], d["rule"], d["decision"], d["text"]) for d in again["decisions"]] == [
        (0, rule, "edited", "Réduire la dose")
    ]
    assert again["proposals"] == ["Bilan rénal"]
    history = client.get(f"{base}/history", headers=auth).json()
    assert [h["version"] for h in history] == [1, 2, 3]
    assert history[0]["decisions"][0]["decision"] == "accepted"  # nothing overwritten

    view = analysis_review(platform.store, analysis["id"])
    assert view is not None
    assert view.version == 3
    assert analysis_review(platform.store, "an-0000000000000000") is None

    events = {(e.action, e.object_type, e.object_id, e.outcome) for e in platform.audit.entries()}
    assert ("update", "analysis_review", analysis["id"], "success") in events
    assert ("read", "analysis_review", analysis["id"], "success") in events

    # Each review version leaves for the cloud with the analysis's random id, nothing else.
    from appliance.outbox import stream_entries

    replicated = [
        e.payload
        for e in stream_entries(platform.store.db, "analyses")
        if e.kind == "analysis.review"
    ]
    assert [r["version"] for r in replicated] == [1, 2, 3]
    assert {r["analysis_id"] for r in replicated} == {analysis["id"]}
    assert replicated[-1]["proposals"] == ["Bilan rénal"]
    assert replicated[-1]["decisions"][0]["decision"] == "edited"
    assert "user-test" not in json.dumps(replicated)


def test_review_errors_are_problem_details(
    client: Any, auth: dict[str, str], token_for: Any, platform: Platform
) -> None:
    analysis = _stored_analysis(client, auth)
    base = f"/api/v1/analyses/{analysis['id']}/review"
    unknown = client.put(
        "/api/v1/analyses/an-0000000000000000/review/findings/0",
        json={"decision": "accepted"},
        headers=auth,
    )
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    past_end = len(analysis["findings"])
    cases = [
        (f"{base}/findings/{past_end}", {"decision": "accepted"}, 404),
        (f"{base}/findings/0", {"decision": "maybe"}, 400),
        (f"{base}/findings/0", {"decision": "edited", "text": "  "}, 400),
        (f"{base}/findings/0", {"decision": "accepted", "rule": "NOT-THIS"}, 409),
    ]
    for path, body, status in cases:
        answer = client.put(path, json=body, headers=auth)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["status"] == status
    assert client.post(f"{base}/proposals", json={"text": " "}, headers=auth).status_code == 400
    assert client.get(base, headers=auth).json()["version"] == 0  # nothing stored
    unknown_read = client.get("/api/v1/analyses/an-0000000000000000/review", headers=auth)
    assert unknown_read.status_code == 404

    reader = {"Authorization": f"Bearer {token_for('patients:read')}"}
    assert client.get(base, headers=reader).status_code == 403
    write = client.put(f"{base}/findings/0", json={"decision": "accepted"}, headers=reader)
    assert write.status_code == 403
    refused = {(e.object_type, e.outcome) for e in platform.audit.entries()}
    assert ("analysis_review", "refused") in refused
    assert ("analysis_review", "not_found") in refused
