"""Appending to, checkpointing and verifying the audit database.

Server, worker and CLI processes all append to the same file, so the read of the chain head
and the insert happen in one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock, not a
Python lock, is what keeps seq contiguous and every entry linked to its true predecessor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from appliance.audit.chain import GENESIS_HASH, ChainVerifier, make_checkpoint, make_entry
from appliance.audit.models import (
    EVENT_FIELDS,
    AuditEntry,
    AuditEvent,
    AuditEventError,
    Checkpoint,
    VerificationResult,
    validate_event,
)
from appliance.store import Store

ENTRY_COLUMNS = ("seq", "recorded_at", *EVENT_FIELDS, "prev_hash", "hash")
CHECKPOINT_COLUMNS = ("seq", "entry_hash", "signed_at", "key_id", "signature")
VERIFY_BATCH = 1000

# Literal SQL, no string building: column order must match ENTRY_COLUMNS / CHECKPOINT_COLUMNS.
_SELECT_ENTRIES = (
    "SELECT seq, recorded_at, actor, role, action, object_type, object_id, purpose, "
    "client_addr, outcome, request_id, prev_hash, hash FROM audit_entries"
)
_INSERT_ENTRY = (
    "INSERT INTO audit_entries (seq, recorded_at, actor, role, action, object_type, "
    "object_id, purpose, client_addr, outcome, request_id, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_CHECKPOINTS = "SELECT seq, entry_hash, signed_at, key_id, signature FROM audit_checkpoints"
_INSERT_CHECKPOINT = (
    "INSERT INTO audit_checkpoints (seq, entry_hash, signed_at, key_id, signature) "
    "VALUES (?, ?, ?, ?, ?)"
)


def utc_now() -> str:
    """UTC time with microseconds, so entries written in the same second stay distinct."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _entry(row: Sequence[Any]) -> AuditEntry:
    return AuditEntry(**dict(zip(ENTRY_COLUMNS, row, strict=True)))


def _checkpoint(row: Sequence[Any]) -> Checkpoint:
    return Checkpoint(**dict(zip(CHECKPOINT_COLUMNS, row, strict=True)))


class AuditLog:
    """The audit log of one appliance: one database, one signing key."""

    def __init__(
        self,
        store: Store,
        signing_key: Ed25519PrivateKey,
        *,
        checkpoint_every: int = 100,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.store = store
        self._signing_key = signing_key
        self.public_key: Ed25519PublicKey = signing_key.public_key()
        self.checkpoint_every = checkpoint_every
        self._clock = clock

    def record(self, event: AuditEvent) -> AuditEntry:
        """Append ``event``; raise rather than lose it, so callers can fail closed."""
        if not isinstance(event, AuditEvent):
            raise AuditEventError("audit events must be AuditEvent instances")
        validate_event(event)
        with self.store.write() as db:
            seq, prev_hash = self._head(db)
            entry = make_entry(seq + 1, prev_hash, self._clock(), event)
            db.execute(_INSERT_ENTRY, [getattr(entry, column) for column in ENTRY_COLUMNS])
            if entry.seq % self.checkpoint_every == 0:
                self._insert_checkpoint(db, entry.seq, entry.hash)
        return entry

    def checkpoint(self) -> Checkpoint | None:
        """Sign the latest entry unless it already is; ``None`` when there is nothing to sign.

        Called periodically so that a quiet appliance does not leave its last entries
        unsigned (removing unsigned entries from the end cannot be detected).
        """
        with self.store.write() as db:
            seq, head_hash = self._head(db)
            if seq == 0:
                return None
            signed = db.execute("SELECT 1 FROM audit_checkpoints WHERE seq = ?", [seq]).fetchone()
            if signed is not None:
                return None
            return self._insert_checkpoint(db, seq, head_hash)

    def verify(self, *, batch_size: int = VERIFY_BATCH) -> VerificationResult:
        """Verify the whole log, streaming entries so memory does not grow with the log."""
        db = self.store.db
        own_snapshot = not db.conn.in_transaction
        if own_snapshot:
            # One read snapshot: checkpoints and entries written meanwhile by other processes
            # must not make the two disagree (a new checkpoint would look like a truncation).
            db.conn.execute("BEGIN DEFERRED")
        try:
            checkpoints = [_checkpoint(row) for row in db.execute(_SELECT_CHECKPOINTS)]

            def find_seqs(hash_value: str) -> list[int]:
                rows = db.execute(
                    "SELECT seq FROM audit_entries WHERE hash = ? ORDER BY seq", [hash_value]
                )
                return [int(row[0]) for row in rows]

            verifier = ChainVerifier(checkpoints, self.public_key, find_seqs)
            cursor = db.execute(_SELECT_ENTRIES + " ORDER BY seq")
            while rows := cursor.fetchmany(batch_size):
                if not all(verifier.feed(_entry(row)) for row in rows):
                    break
            cursor.close()
            return verifier.result()
        finally:
            if own_snapshot and db.conn.in_transaction:
                db.conn.execute("COMMIT")

    def entries(self, after_seq: int = 0, limit: int = 100) -> list[AuditEntry]:
        """A page of entries in seq order, for ``hygie audit show`` and exports."""
        rows = self.store.db.execute(
            _SELECT_ENTRIES + " WHERE seq > ? ORDER BY seq LIMIT ?", [after_seq, limit]
        )
        return [_entry(row) for row in rows]

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint in seq order."""
        rows = self.store.db.execute(_SELECT_CHECKPOINTS + " ORDER BY seq")
        return [_checkpoint(row) for row in rows]

    def count(self) -> int:
        row = self.store.db.execute("SELECT count(*) FROM audit_entries").fetchone()
        return int(row[0])

    def _head(self, db: sqlite_utils.Database) -> tuple[int, str]:
        row = db.execute("SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))

    def _insert_checkpoint(self, db: sqlite_utils.Database, seq: int, head_hash: str) -> Checkpoint:
        checkpoint = make_checkpoint(self._signing_key, seq, head_hash, self._clock())
        db.execute(
            _INSERT_CHECKPOINT, [getattr(checkpoint, column) for column in CHECKPOINT_COLUMNS]
        )
        return checkpoint
