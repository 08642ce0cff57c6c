"""The task worker: a huey queue in its own plain SQLite file, and the platform's tasks.

The queue file is not encrypted, so task payloads carry ids only, never patient data; the
task looks the data up in the encrypted store when it runs. The heartbeat lets
``/health/ready`` tell whether a worker is alive.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import UTC, datetime

from huey import SqliteHuey, crontab

from appliance.audit import AuditLog
from appliance.config import Settings
from appliance.outbox import OUTBOX_MIGRATIONS, enqueue
from appliance.platform import Platform
from appliance.plugin import ServicePlugin
from appliance.store import Migration, Store

HEARTBEAT_TABLE = "worker_heartbeats"

PLATFORM_MIGRATIONS: tuple[Migration, ...] = (
    Migration.sql(
        "platform",
        1,
        "worker heartbeats",
        f"CREATE TABLE {HEARTBEAT_TABLE} ("
        "worker TEXT PRIMARY KEY, pid INTEGER NOT NULL, beat_at TEXT NOT NULL)",
    ),
    *OUTBOX_MIGRATIONS,
)


def record_heartbeat(store: Store, worker: str | None = None) -> datetime:
    now = datetime.now(UTC)
    with store.write() as db:
        db.table(HEARTBEAT_TABLE).upsert(
            {
                "worker": worker or f"{socket.gethostname()}:{os.getpid()}",
                "pid": os.getpid(),
                "beat_at": now.isoformat(),
            },
            pk="worker",
        )
    return now


def last_heartbeat(store: Store) -> datetime | None:
    row = store.db.execute(f"SELECT max(beat_at) FROM {HEARTBEAT_TABLE}").fetchone()
    return datetime.fromisoformat(row[0]) if row and row[0] else None


def checkpoint_to_outbox(audit: AuditLog, store: Store) -> int | None:
    """Sign the audit head, then queue the latest checkpoint for the cloud.

    The audit log is its own database, so the two writes cannot share a transaction; the
    idempotency key (the checkpoint's seq) makes re-running after a crash harmless: the
    latest checkpoint is (re)queued every time, written once.
    """
    audit.checkpoint()
    checkpoints = audit.checkpoints()
    if not checkpoints:
        return None
    latest = checkpoints[-1]
    with store.write() as db:
        return enqueue(
            db,
            stream="audit",
            kind="audit.checkpoint",
            payload={
                "seq": latest.seq,
                "entry_hash": latest.entry_hash,
                "signed_at": latest.signed_at,
                "key_id": latest.key_id,
                "signature": latest.signature,
            },
            idempotency_key=f"audit-checkpoint:{latest.key_id}:{latest.seq}",
        )


def create_huey(settings: Settings, *, immediate: bool = False) -> SqliteHuey:
    settings.data_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SqliteHuey(
        name="hygie",
        filename=str(settings.queue_db_path),
        fsync=True,
        timeout=settings.busy_timeout_ms / 1000,
        immediate=immediate,
    )


def register_tasks(huey: SqliteHuey, platform: Platform, plugins: Iterable[ServicePlugin]) -> None:
    """Register the platform's periodic tasks, then each service's."""

    @huey.on_startup()
    def heartbeat_on_start() -> None:
        record_heartbeat(platform.store)

    @huey.periodic_task(crontab(minute="*"))
    def heartbeat() -> None:
        record_heartbeat(platform.store)

    @huey.periodic_task(crontab(minute="*/5"))
    def audit_checkpoint() -> None:
        checkpoint_to_outbox(platform.audit, platform.store)

    for plugin in plugins:
        if plugin.register_tasks is not None:
            plugin.register_tasks(huey, platform)
