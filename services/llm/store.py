"""Persistence of generations (one versioned row per draft, with its traceability record)
and of the jobs the HTTP API queues for the worker."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from appliance.store import Migration, Store, Versioned, VersionedTable
from services.llm.models import GenerationRecord, LlmJob

COMPONENT = "llm"
TABLE: VersionedTable[GenerationRecord] = VersionedTable("llm_generations", GenerationRecord)
JOBS: VersionedTable[LlmJob] = VersionedTable("llm_jobs", LlmJob)
MIGRATIONS: tuple[Migration, ...] = (
    TABLE.create_table_migration(COMPONENT, 1),
    JOBS.create_table_migration(COMPONENT, 2),
    Migration.sql(
        COMPONENT,
        3,
        "running jobs' text so far",
        "CREATE TABLE llm_job_progress (job_id TEXT PRIMARY KEY, attempt INTEGER NOT NULL, "
        "model TEXT NOT NULL, text TEXT NOT NULL, updated_at TEXT NOT NULL)",
    ),
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


def set_progress(store: Store, job_id: str, attempt: int, model: str, text: str) -> None:
    """The running attempt's text so far (a preview, replaced as it grows; removed when the
    job ends, so unvalidated text does not stay in the store)."""
    with store.write() as db:
        db.execute(
            "INSERT INTO llm_job_progress (job_id, attempt, model, text, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET attempt = "
            "excluded.attempt, model = excluded.model, text = excluded.text, "
            "updated_at = excluded.updated_at",
            [job_id, attempt, model, text, datetime.now(UTC).isoformat()],
        )


def get_progress(store: Store, job_id: str) -> tuple[int, str, str] | None:
    row = store.db.execute(
        "SELECT attempt, model, text FROM llm_job_progress WHERE job_id = ?", [job_id]
    ).fetchone()
    return (int(row[0]), str(row[1]), str(row[2])) if row else None


def clear_progress(store: Store, job_id: str) -> None:
    with store.write() as db:
        db.execute("DELETE FROM llm_job_progress WHERE job_id = ?", [job_id])
