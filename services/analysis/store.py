"""Persistence of analyses (patient data: the API audits every write and read)."""

from __future__ import annotations

import secrets

from appliance.store import Migration, Store, Versioned, VersionedTable
from services.analysis.models import AnalysisResult, StoredAnalysis

COMPONENT = "analysis"
TABLE: VersionedTable[StoredAnalysis] = VersionedTable("analyses", StoredAnalysis)
MIGRATIONS: tuple[Migration, ...] = (TABLE.create_table_migration(COMPONENT, 1),)


def new_id() -> str:
    return "an-" + secrets.token_hex(8)


def save(
    store: Store, result: AnalysisResult, *, patient_ref: str | None, actor: str
) -> Versioned[StoredAnalysis]:
    item = StoredAnalysis(id=new_id(), patient_ref=patient_ref, result=result)
    with store.write() as db:
        return TABLE.append(db, item.id, item, actor=actor, expected_version=0)


def get(store: Store, analysis_id: str) -> Versioned[StoredAnalysis] | None:
    return TABLE.get(store.db, analysis_id)
