"""Persistence of analyses (patient data: the API audits every write and read).

Each stored analysis is also put in the sync outbox (stream ``analyses``) in the same
transaction, pseudonymised: the patient is named by the patients service's pseudonym, and
the ``source`` (a file path on the counter's machine, for the CLI) is left out.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import msgspec

from appliance.outbox import enqueue
from appliance.store import Migration, Store, Versioned, VersionedTable
from services.analysis import logic
from services.analysis.models import (
    AnalysisResult,
    AnalysisReview,
    Decision,
    ReviewView,
    StoredAnalysis,
)

COMPONENT = "analysis"
TABLE: VersionedTable[StoredAnalysis] = VersionedTable("analyses", StoredAnalysis)
REVIEWS: VersionedTable[AnalysisReview] = VersionedTable("analysis_reviews", AnalysisReview)
"""The pharmacist's review of each stored analysis (decisions, own proposals), versioned."""
MIGRATIONS: tuple[Migration, ...] = (
    TABLE.create_table_migration(COMPONENT, 1),
    REVIEWS.create_table_migration(COMPONENT, 2),
)
OUTBOX_STREAM = "analyses"
OUTBOX_KIND = "analysis.result"
REVIEW_KIND = "analysis.review"


def new_id() -> str:
    return "an-" + secrets.token_hex(8)


def replication_payload(saved: Versioned[StoredAnalysis], pseudonym: str | None) -> dict[str, Any]:
    """What leaves the appliance for one stored analysis: no patient reference, no path."""
    result = msgspec.structs.replace(saved.entity.result, source=None)
    return {
        "analysis_id": saved.entity.id,
        "patient": pseudonym,
        "recorded_at": saved.recorded_at.isoformat(),
        "result": msgspec.to_builtins(result),
    }


def save(
    store: Store,
    result: AnalysisResult,
    *,
    patient_ref: str | None,
    pseudonym: str | None,
    actor: str,
) -> tuple[Versioned[StoredAnalysis], int]:
    """Store the analysis and enqueue its replication record in one transaction.

    Returns the stored version and the outbox sequence number.
    """
    item = StoredAnalysis(id=new_id(), patient_ref=patient_ref, result=result)
    with store.write() as db:
        saved = TABLE.append(db, item.id, item, actor=actor, expected_version=0)
        seq = enqueue(
            db,
            stream=OUTBOX_STREAM,
            kind=OUTBOX_KIND,
            payload=replication_payload(saved, pseudonym),
            idempotency_key=f"{OUTBOX_KIND}:{item.id}",
        )
    return saved, seq


def get(store: Store, analysis_id: str) -> Versioned[StoredAnalysis] | None:
    return TABLE.get(store.db, analysis_id)


# ------------------------------------------------------------------ reviews (issue 9)


def get_review(store: Store, analysis_id: str) -> Versioned[AnalysisReview] | None:
    return REVIEWS.get(store.db, analysis_id)


def review_history(store: Store, analysis_id: str) -> list[Versioned[AnalysisReview]]:
    return REVIEWS.history(store.db, analysis_id)


def update_review(
    store: Store,
    analysis_id: str,
    change: Callable[[AnalysisReview], AnalysisReview],
    *,
    actor: str,
) -> Versioned[AnalysisReview]:
    """Append the next version of the review, ``change`` applied to the latest one.

    Read and append happen in one write transaction, so two decisions made at the same time
    on the same analysis both land (one after the other) instead of one erasing the other.
    The new version is enqueued for replication in the same transaction: the pharmacist's
    decisions are part of the clinical record the cloud keeps, next to the analysis.
    """
    with store.write() as db:
        latest = REVIEWS.get(db, analysis_id)
        current = latest.entity if latest is not None else AnalysisReview(analysis_id=analysis_id)
        saved = REVIEWS.append(
            db,
            analysis_id,
            change(current),
            actor=actor,
            expected_version=latest.version if latest is not None else 0,
        )
        enqueue(
            db,
            stream=OUTBOX_STREAM,
            kind=REVIEW_KIND,
            payload=review_replication_payload(saved),
            idempotency_key=f"{REVIEW_KIND}:{analysis_id}:{saved.version}",
        )
        return saved


def review_replication_payload(saved: Versioned[AnalysisReview]) -> dict[str, Any]:
    """One review version as it leaves the appliance: tied to the analysis by its random id
    only (the analysis record carries the patient's pseudonym), never to the patient."""
    return {
        "analysis_id": saved.entity.analysis_id,
        "version": saved.version,
        "recorded_at": saved.recorded_at.isoformat(),
        "decisions": msgspec.to_builtins(list(saved.entity.decisions)),
        "proposals": msgspec.to_builtins(list(saved.entity.proposals)),
    }


def review_view(analysis_id: str, item: Versioned[AnalysisReview] | None) -> ReviewView:
    """The API's shape of one review version (version 0 when none is stored yet)."""
    if item is None:
        return ReviewView(
            analysis_id=analysis_id,
            version=0,
            recorded_at=None,
            recorded_by=None,
            decisions=[],
            proposals=[],
        )
    return ReviewView(
        analysis_id=analysis_id,
        version=item.version,
        recorded_at=item.recorded_at,
        recorded_by=item.recorded_by,
        decisions=list(item.entity.decisions),
        proposals=list(item.entity.proposals),
    )


def _known(store: Store, analysis_id: str) -> Versioned[StoredAnalysis]:
    item = get(store, analysis_id)
    if item is None:
        raise logic.ReviewError(404, "not-found", f"analyse inconnue : {analysis_id}")
    return item


def review_finding(
    store: Store,
    analysis_id: str,
    index: int,
    decision: Decision,
    *,
    actor: str,
    text: str = "",
    reason: str = "",
    rule: str | None = None,
) -> Versioned[AnalysisReview]:
    """Record the decision on finding ``index`` of a stored analysis (a new review version).

    Raises :class:`~services.analysis.logic.ReviewError` for an unknown analysis or finding,
    or a decision that cannot stand (not audited: the caller audits).
    """
    findings = _known(store, analysis_id).entity.result.findings
    return update_review(
        store,
        analysis_id,
        lambda review: logic.decide(
            review, findings, index, decision, text=text, reason=reason, rule=rule
        ),
        actor=actor,
    )


def add_proposal(
    store: Store, analysis_id: str, text: str, *, actor: str
) -> Versioned[AnalysisReview]:
    """Add a proposal of the pharmacist's own to the review of a stored analysis."""
    _known(store, analysis_id)
    return update_review(
        store, analysis_id, lambda review: logic.propose(review, text), actor=actor
    )
