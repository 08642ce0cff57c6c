"""Tamper-evident audit log of every access to patient data, in its own SQLCipher database.

Entries form a SHA-256 hash chain and the chain head is signed at checkpoints with the
appliance's Ed25519 key, so ``hygie audit verify`` can point at the first entry that was
changed, removed, moved or cut off, even by someone who holds the database key.
"""

from __future__ import annotations

from appliance.audit.log import AuditLog
from appliance.audit.models import (
    AuditEntry,
    AuditEvent,
    AuditEventError,
    Checkpoint,
    VerificationProblem,
    VerificationResult,
)
from appliance.audit.schema import AUDIT_MIGRATIONS
from appliance.audit.signing import load_signing_key
from appliance.config import Settings
from appliance.keys import derive_key
from appliance.store import Store

AUDIT_DB_PURPOSE = "audit-db"

_PROBLEM_LABELS = {
    "altered": "ALTERED",
    "removed": "ENTRIES REMOVED",
    "reordered": "REORDERED",
    "truncated": "TRUNCATED",
    "bad_checkpoint": "BAD CHECKPOINT",
}


def open_audit_log(settings: Settings, master_key: bytes) -> AuditLog:
    """Open the existing audit database (``hygie db migrate`` creates it) and signing key.

    The signing key is loaded before anything is written, so a missing or malformed key
    stops start-up instead of producing entries that can never be checkpointed.
    """
    signing_key = load_signing_key(settings)
    store = Store.open(
        settings.audit_db_path,
        derive_key(master_key, AUDIT_DB_PURPOSE),
        busy_timeout_ms=settings.busy_timeout_ms,
    )
    return AuditLog(store, signing_key, checkpoint_every=settings.audit_checkpoint_every)


def format_result(result: VerificationResult) -> str:
    """One operator-facing sentence: the verdict first, then what to look at."""
    problem = result.problem
    if problem is None:
        if result.checkpoints_checked == 0:
            signed = "no signed checkpoint yet"
        else:
            signed = (
                f"{result.checkpoints_checked} checkpoints, "
                f"last checkpoint at seq {result.last_checkpoint_seq}"
            )
        unsigned = result.entries_checked - result.last_checkpoint_seq
        tail = f" ({unsigned} newer entries not yet signed)" if unsigned > 0 else ""
        return f"audit log OK: {result.entries_checked} entries, {signed}{tail}"
    label = _PROBLEM_LABELS.get(problem.kind, problem.kind.upper())
    return (
        f"audit log {label}: {problem.message}. {result.entries_checked} entries verified "
        "before it; keep a copy of the audit database for investigation and do not modify it"
    )


__all__ = [
    "AUDIT_MIGRATIONS",
    "AuditEntry",
    "AuditEvent",
    "AuditEventError",
    "AuditLog",
    "Checkpoint",
    "VerificationProblem",
    "VerificationResult",
    "format_result",
    "load_signing_key",
    "open_audit_log",
]
