"""Persistence of generations: one versioned row per draft, with its traceability record."""

from __future__ import annotations

from appliance.store import Migration, Store, Versioned, VersionedTable
from services.llm.models import GenerationRecord

COMPONENT = "llm"
TABLE: VersionedTable[GenerationRecord] = VersionedTable("llm_generations", GenerationRecord)
MIGRATIONS: tuple[Migration, ...] = (TABLE.create_table_migration(COMPONENT, 1),)


def save(store: Store, record: GenerationRecord, *, actor: str) -> Versioned[GenerationRecord]:
    with store.write() as db:
        return TABLE.append(db, record.id, record, actor=actor, expected_version=0)


def get(store: Store, generation_id: str) -> Versioned[GenerationRecord] | None:
    return TABLE.get(store.db, generation_id)


def list_current(store: Store, *, limit: int, offset: int) -> list[Versioned[GenerationRecord]]:
    return TABLE.current(store.db, limit=limit, offset=offset)
