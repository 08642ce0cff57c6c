"""Persistence of generations (one versioned row per draft, with its traceability record)
and of the jobs the HTTP API queues for the worker."""

from __future__ import annotations

import msgspec

from appliance.store import Migration, Store, Versioned, VersionedTable
from services.llm.models import GenerationRecord, LlmJob

COMPONENT = "llm"
TABLE: VersionedTable[GenerationRecord] = VersionedTable("llm_generations", GenerationRecord)
JOBS: VersionedTable[LlmJob] = VersionedTable("llm_jobs", LlmJob)
MIGRATIONS: tuple[Migration, ...] = (
    TABLE.create_table_migration(COMPONENT, 1),
    JOBS.create_table_migration(COMPONENT, 2),
)


def save(store: Store, record: GenerationRecord, *, actor: str) -> Versioned[GenerationRecord]:
    with store.write() as db:
        return TABLE.append(db, record.id, record, actor=actor, expected_version=0)


def get(store: Store, generation_id: str) -> Versioned[GenerationRecord] | None:
    return TABLE.get(store.db, generation_id)


def list_current(store: Store, *, limit: int, offset: int) -> list[Versioned[GenerationRecord]]:
    return TABLE.current(store.db, limit=limit, offset=offset)


def create_job(store: Store, job: LlmJob) -> Versioned[LlmJob]:
    with store.write() as db:
        return JOBS.append(db, job.id, job, actor=job.actor, expected_version=0)


def get_job(store: Store, job_id: str) -> Versioned[LlmJob] | None:
    return JOBS.get(store.db, job_id)


def update_job(store: Store, current: Versioned[LlmJob], **changes: object) -> Versioned[LlmJob]:
    """A new version of the job (the worker's steps); refused if someone wrote in between."""
    job = msgspec.structs.replace(current.entity, **changes)
    with store.write() as db:
        return JOBS.append(db, job.id, job, actor=job.actor, expected_version=current.version)
