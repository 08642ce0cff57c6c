"""Persistence of analyses (patient data: the API audits every write and read).

Each stored analysis is also put in the sync outbox (stream ``analyses``) in the same
transaction, pseudonymised: the patient is named by the patients service's pseudonym, and
the ``source`` (a file path on the counter's machine, for the CLI) is left out.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from appliance.outbox import enqueue
from appliance.store import Migration, Store, Versioned, VersionedTable
from services.analysis.models import AnalysisResult, StoredAnalysis

COMPONENT = "analysis"
TABLE: VersionedTable[StoredAnalysis] = VersionedTable("analyses", StoredAnalysis)
MIGRATIONS: tuple[Migration, ...] = (TABLE.create_table_migration(COMPONENT, 1),)
OUTBOX_STREAM = "analyses"
OUTBOX_KIND = "analysis.result"


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
