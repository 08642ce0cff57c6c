"""The transactional outbox and inbox of the offline-first sync.

Why in the platform: every service must be able to record "this change must leave the box"
in the *same* SQLCipher transaction as the change itself, so a crash can never keep one
without the other. Services call :func:`enqueue` inside their ``with store.write() as db:``
block; the sync agent (``sync/``) later reads the pending rows in sequence order, pushes them
and advances the acknowledged cursor. Sequences come from ``AUTOINCREMENT``: they only grow,
whatever the wall clock says, so ordering survives a clock set back.

The inbox is the other direction: items the cloud sends back (teletransmission
acknowledgements and payment returns, knowledge updates, configuration) land in
``sync_inbox`` once, keyed by the cloud's item id, and services read them with
:func:`read_inbox` and remember how far they got with :func:`inbox_cursor` /
:func:`advance_inbox_cursor`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from appliance.store import Migration

OUTBOX_TABLE = "sync_outbox"
CURSOR_TABLE = "sync_cursors"
INBOX_TABLE = "sync_inbox"
PUSH_CURSOR = "push"
"""The cursor the agent advances when the cloud acknowledges a batch."""
MAX_KEY_LENGTH = 200
MAX_NAME_LENGTH = 64


class OutboxError(ValueError):
    """A caller broke the outbox contract (bad argument or no surrounding transaction)."""


OUTBOX_MIGRATIONS: tuple[Migration, ...] = (
    Migration.sql(
        "outbox",
        1,
        "outbox, cursors and inbox",
        f"""
        CREATE TABLE {OUTBOX_TABLE} (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL,
            stream TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            idempotency_key TEXT NOT NULL UNIQUE
        );
        CREATE INDEX sync_outbox_stream_seq ON {OUTBOX_TABLE} (stream, seq);
        CREATE TABLE {CURSOR_TABLE} (
            name TEXT PRIMARY KEY,
            position INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE {INBOX_TABLE} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            remote_id TEXT NOT NULL UNIQUE,
            received_at TEXT NOT NULL,
            stream TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL
        );
        CREATE INDEX sync_inbox_stream_id ON {INBOX_TABLE} (stream, id);
        """,
    ),
)


@dataclass(frozen=True)
class OutboxEntry:
    """One row of the outbox as the agent pushes it."""

    seq: int
    created_at: str
    stream: str
    kind: str
    payload: dict[str, Any]
    idempotency_key: str


@dataclass(frozen=True)
class InboxItem:
    """One item received from the cloud, as services read it."""

    id: int
    remote_id: str
    received_at: str
    stream: str
    kind: str
    payload: dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _check_name(label: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise OutboxError(f"{label} must be a non-empty string of at most {MAX_NAME_LENGTH} chars")
    return value


def _canonical_json(payload: Mapping[str, Any]) -> str:
    if not isinstance(payload, Mapping):
        raise OutboxError("payload must be a mapping (a JSON object)")
    try:
        return json.dumps(dict(payload), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"payload is not JSON-serialisable: {exc}") from exc


def _require_transaction(db: sqlite_utils.Database) -> None:
    if not db.conn.in_transaction:
        raise OutboxError(
            "enqueue must run inside the domain change's transaction (with store.write() as db)"
        )


def enqueue(
    db: sqlite_utils.Database,
    *,
    stream: str,
    kind: str,
    payload: Mapping[str, Any],
    idempotency_key: str,
) -> int:
    """Append one change to the outbox and return its sequence number.

    Must be called inside the caller's write transaction so the change and its outbox row
    commit together. A repeat with an ``idempotency_key`` already present returns the
    existing sequence and writes nothing: retried requests and re-run tasks stay exactly-once.
    Payloads must be pseudonymised by the caller; they are encrypted end to end before they
    leave the appliance.
    """
    _check_name("stream", stream)
    _check_name("kind", kind)
    if (
        not isinstance(idempotency_key, str)
        or not idempotency_key
        or len(idempotency_key) > MAX_KEY_LENGTH
    ):
        raise OutboxError(
            f"idempotency_key must be a non-empty string of at most {MAX_KEY_LENGTH} chars"
        )
    body = _canonical_json(payload)
    _require_transaction(db)
    existing = db.execute(
        "SELECT seq FROM sync_outbox WHERE idempotency_key = ?", [idempotency_key]
    ).fetchone()
    if existing is not None:
        return int(existing[0])
    cursor = db.execute(
        "INSERT INTO sync_outbox (created_at, stream, kind, payload, idempotency_key) "
        "VALUES (?, ?, ?, ?, ?)",
        [_now(), stream, kind, body, idempotency_key],
    )
    seq = cursor.lastrowid
    assert seq is not None
    return int(seq)


def _entry(row: tuple[Any, ...]) -> OutboxEntry:
    return OutboxEntry(
        seq=int(row[0]),
        created_at=str(row[1]),
        stream=str(row[2]),
        kind=str(row[3]),
        payload=json.loads(row[4]),
        idempotency_key=str(row[5]),
    )


def cursor_position(db: sqlite_utils.Database, name: str = PUSH_CURSOR) -> int:
    """The last sequence the cloud acknowledged (0 before the first acknowledgement)."""
    row = db.execute("SELECT position FROM sync_cursors WHERE name = ?", [name]).fetchone()
    return int(row[0]) if row else 0


def advance_cursor(db: sqlite_utils.Database, position: int, name: str = PUSH_CURSOR) -> int:
    """Move a cursor forward to ``position``; never backwards (a late ack changes nothing)."""
    current = cursor_position(db, name)
    if position <= current:
        return current
    db.execute(
        "INSERT INTO sync_cursors (name, position, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET position = excluded.position, "
        "updated_at = excluded.updated_at",
        [name, int(position), _now()],
    )
    return int(position)


def pending_batch(
    db: sqlite_utils.Database, *, after: int | None = None, limit: int = 500
) -> list[OutboxEntry]:
    """The next ``limit`` entries after ``after`` (default: the push cursor), in seq order.

    Global sequence order is a superset of every stream's order, so pushing in this order
    keeps each stream ordered.
    """
    start = cursor_position(db) if after is None else after
    rows = db.execute(
        "SELECT seq, created_at, stream, kind, payload, idempotency_key FROM sync_outbox "
        "WHERE seq > ? ORDER BY seq LIMIT ?",
        [start, int(limit)],
    ).fetchall()
    return [_entry(row) for row in rows]


def stream_entries(
    db: sqlite_utils.Database, stream: str, *, after: int = 0, limit: int = 500
) -> list[OutboxEntry]:
    """One stream's entries after sequence ``after``, in order (index on stream, seq)."""
    rows = db.execute(
        "SELECT seq, created_at, stream, kind, payload, idempotency_key FROM sync_outbox "
        "WHERE stream = ? AND seq > ? "
        "ORDER BY seq LIMIT ?",
        [stream, after, int(limit)],
    ).fetchall()
    return [_entry(row) for row in rows]


def backlog_size(db: sqlite_utils.Database) -> int:
    """How many entries the cloud has not acknowledged yet (a rowid range count: fast)."""
    row = db.execute(
        "SELECT count(*) FROM sync_outbox WHERE seq > ?", [cursor_position(db)]
    ).fetchone()
    return int(row[0])


def oldest_pending(db: sqlite_utils.Database) -> OutboxEntry | None:
    """The oldest entry not yet acknowledged, or ``None`` when everything left the box."""
    row = db.execute(
        "SELECT seq, created_at, stream, kind, payload, idempotency_key FROM sync_outbox "
        "WHERE seq > ? ORDER BY seq LIMIT 1",
        [cursor_position(db)],
    ).fetchone()
    return None if row is None else _entry(row)


def last_sequence(db: sqlite_utils.Database) -> int:
    """The highest sequence ever handed out (0 for an empty outbox)."""
    row = db.execute("SELECT max(seq) FROM sync_outbox").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def prune_acknowledged(db: sqlite_utils.Database, *, keep_last: int = 10_000) -> int:
    """Delete acknowledged entries except the ``keep_last`` most recent; return how many.

    AUTOINCREMENT guarantees sequences are never reused after a delete.
    """
    cutoff = cursor_position(db) - max(0, keep_last)
    if cutoff <= 0:
        return 0
    cursor = db.execute("DELETE FROM sync_outbox WHERE seq <= ?", [cutoff])
    return int(cursor.rowcount or 0)


# --- inbox: what the cloud sends back -------------------------------------------------------


def receive(
    db: sqlite_utils.Database,
    *,
    remote_id: str,
    stream: str,
    kind: str,
    payload: Mapping[str, Any],
) -> int | None:
    """Store one item from the cloud once; ``None`` when ``remote_id`` was already received.

    Called by the sync agent inside its transaction, together with the feed cursor advance.
    """
    _check_name("stream", stream)
    _check_name("kind", kind)
    if not isinstance(remote_id, str) or not remote_id or len(remote_id) > MAX_KEY_LENGTH:
        raise OutboxError("remote_id must be a non-empty string")
    body = _canonical_json(payload)
    _require_transaction(db)
    cursor = db.execute(
        "INSERT INTO sync_inbox (remote_id, received_at, stream, kind, payload) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(remote_id) DO NOTHING",
        [remote_id, _now(), stream, kind, body],
    )
    if not cursor.rowcount:
        return None
    return int(cursor.lastrowid or 0)


def read_inbox(
    db: sqlite_utils.Database,
    *,
    stream: str | None = None,
    kind: str | None = None,
    after: int = 0,
    limit: int = 500,
) -> list[InboxItem]:
    """Received items with ``id > after`` in arrival order, optionally for one stream/kind.

    Services (e.g. billing reading ``stream="teletransmission"``) keep their own position
    with :func:`inbox_cursor` / :func:`advance_inbox_cursor` so each item is handled once.
    """
    rows = db.execute(
        "SELECT id, remote_id, received_at, stream, kind, payload FROM sync_inbox "
        "WHERE id > :after AND (:stream IS NULL OR stream = :stream) "
        "AND (:kind IS NULL OR kind = :kind) ORDER BY id LIMIT :limit",
        {"after": after, "stream": stream, "kind": kind, "limit": int(limit)},
    ).fetchall()
    return [
        InboxItem(
            id=int(row[0]),
            remote_id=str(row[1]),
            received_at=str(row[2]),
            stream=str(row[3]),
            kind=str(row[4]),
            payload=json.loads(row[5]),
        )
        for row in rows
    ]


def inbox_cursor(db: sqlite_utils.Database, consumer: str) -> int:
    """The last inbox id ``consumer`` has handled (0 at first)."""
    return cursor_position(db, f"inbox:{_check_name('consumer', consumer)}")


def advance_inbox_cursor(db: sqlite_utils.Database, consumer: str, item_id: int) -> int:
    """Record that ``consumer`` handled every item up to ``item_id`` (call in its transaction)."""
    if isinstance(item_id, bool) or not isinstance(item_id, int):
        raise OutboxError("item_id must be an integer")
    return advance_cursor(db, item_id, f"inbox:{_check_name('consumer', consumer)}")
