"""The platform outbox/inbox on a real SQLCipher store: contract of ``enqueue`` and reads."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from appliance.audit import AuditEvent
from appliance.outbox import (
    OUTBOX_MIGRATIONS,
    OUTBOX_TABLE,
    OutboxError,
    advance_cursor,
    advance_inbox_cursor,
    backlog_size,
    cursor_position,
    enqueue,
    inbox_cursor,
    last_sequence,
    oldest_pending,
    pending_batch,
    prune_acknowledged,
    read_inbox,
    receive,
    stream_entries,
)
from appliance.platform import Platform
from appliance.store import Store, apply_migrations


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store.open(tmp_path / "domain.db", os.urandom(32), create=True)
    apply_migrations(opened, OUTBOX_MIGRATIONS)
    return opened


def test_enqueue_assigns_monotonic_sequences_in_the_callers_transaction(store: Store) -> None:
    with store.write() as db:
        first = enqueue(
            db, stream="patients", kind="patient.version", payload={"v": 1}, idempotency_key="p1:v1"
        )
        second = enqueue(
            db, stream="bpm", kind="bpm.state", payload={"s": "open"}, idempotency_key="b1:s1"
        )
    assert second > first > 0
    batch = pending_batch(store.db)
    assert [(e.seq, e.stream, e.kind, e.payload) for e in batch] == [
        (first, "patients", "patient.version", {"v": 1}),
        (second, "bpm", "bpm.state", {"s": "open"}),
    ]


def test_a_rolled_back_change_leaves_no_outbox_row(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as db:
        enqueue(db, stream="patients", kind="k", payload={}, idempotency_key="gone")
        raise RuntimeError("domain change failed")
    assert backlog_size(store.db) == 0


def test_repeated_idempotency_key_returns_existing_sequence_and_writes_nothing(
    store: Store,
) -> None:
    with store.write() as db:
        seq = enqueue(db, stream="s", kind="k", payload={"a": 1}, idempotency_key="same")
    with store.write() as db:
        again = enqueue(db, stream="s", kind="k", payload={"a": 2}, idempotency_key="same")
    assert again == seq
    assert [e.payload for e in pending_batch(store.db)] == [{"a": 1}]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stream": "", "kind": "k", "payload": {}, "idempotency_key": "x"}, "stream"),
        (
            {"stream": "s", "kind": "k", "payload": {"x": float("nan")}, "idempotency_key": "x"},
            "JSON",
        ),
        ({"stream": "s", "kind": "k", "payload": {"x": object()}, "idempotency_key": "x"}, "JSON"),
        ({"stream": "s", "kind": "k", "payload": {}, "idempotency_key": ""}, "idempotency_key"),
        ({"stream": "s", "kind": "k", "payload": [1], "idempotency_key": "x"}, "mapping"),
    ],
)
def test_bad_arguments_are_refused_clearly(
    store: Store, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(OutboxError, match=message), store.write() as db:
        enqueue(db, **kwargs)  # type: ignore[arg-type]


def test_enqueue_outside_a_transaction_is_refused(store: Store) -> None:
    with pytest.raises(OutboxError, match="transaction"):
        enqueue(store.db, stream="s", kind="k", payload={}, idempotency_key="x")


def test_cursor_backlog_oldest_and_per_stream_order(store: Store) -> None:
    with store.write() as db:
        for i in range(6):
            enqueue(
                db,
                stream="a" if i % 2 else "b",
                kind="k",
                payload={"i": i},
                idempotency_key=f"k{i}",
            )
    db = store.db
    assert backlog_size(db) == 6
    oldest = oldest_pending(db)
    assert oldest is not None
    assert oldest.payload == {"i": 0}
    assert [e.payload["i"] for e in stream_entries(db, "a")] == [1, 3, 5]
    with store.write() as wdb:
        advance_cursor(wdb, 3)
        assert advance_cursor(wdb, 2) == 3, "a late acknowledgement never moves the cursor back"
    assert cursor_position(db) == 3
    assert backlog_size(db) == 3
    assert [e.seq for e in pending_batch(db, limit=2)] == [4, 5]
    with store.write() as wdb:
        advance_cursor(wdb, 6)
        assert prune_acknowledged(wdb, keep_last=2) == 4
    assert oldest_pending(db) is None
    with store.write() as wdb:
        assert enqueue(wdb, stream="a", kind="k", payload={}, idempotency_key="new") == 7
    assert last_sequence(db) == 7


def test_inbox_receives_once_and_consumers_keep_their_place(store: Store) -> None:
    with store.write() as db:
        first = receive(
            db, remote_id="r1", stream="teletransmission", kind="fse.ack", payload={"lot": "L1"}
        )
        assert (
            receive(
                db, remote_id="r1", stream="teletransmission", kind="fse.ack", payload={"lot": "L1"}
            )
            is None
        )
        receive(db, remote_id="r2", stream="knowledge", kind="update", payload={})
        receive(
            db, remote_id="r3", stream="teletransmission", kind="fse.payment", payload={"lot": "L1"}
        )
    items = read_inbox(store.db, stream="teletransmission")
    assert [i.kind for i in items] == ["fse.ack", "fse.payment"]
    assert first == items[0].id
    with store.write() as db:
        advance_inbox_cursor(db, "billing", items[0].id)
    after = inbox_cursor(store.db, "billing")
    assert [i.kind for i in read_inbox(store.db, stream="teletransmission", after=after)] == [
        "fse.payment"
    ]


def test_hundred_thousand_pending_items_stay_cheap_to_inspect(store: Store) -> None:
    """Offline for days: the backlog grows to 100,000 and status stays a cheap query."""
    rows = [
        ("2026-01-01T00:00:00+00:00", f"s{i % 7}", "k", f'{{"i":{i}}}', f"bulk-{i}")
        for i in range(100_000)
    ]
    with store.write() as db:
        db.conn.executemany(
            f"INSERT INTO {OUTBOX_TABLE} (created_at, stream, kind, payload, idempotency_key) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )
    started = time.perf_counter()
    assert backlog_size(store.db) == 100_000
    oldest = oldest_pending(store.db)
    elapsed = time.perf_counter() - started
    assert oldest is not None
    assert oldest.payload == {"i": 0}
    print(f"status over 100,000 pending: {elapsed * 1000:.1f} ms")
    # Drains in order: walking batches covers every sequence exactly once, ascending.
    seen = 0
    last = 0
    while batch := pending_batch(store.db, after=last, limit=5000):
        assert batch[0].seq == last + 1
        last = batch[-1].seq
        seen += len(batch)
    assert seen == 100_000


def test_audit_checkpoints_reach_the_outbox_once(platform: Platform) -> None:
    """The worker's periodic task signs the audit head and queues it, idempotently."""
    from appliance.tasks import checkpoint_to_outbox

    platform.audit.record(
        AuditEvent(
            actor="user:3f2a9c",
            role="pharmacien_titulaire",
            action="read",
            object_type="patient",
            object_id="pat_000001",
            purpose="care",
            client_addr="192.168.1.20",
            outcome="success",
            request_id="req-1",
        )
    )
    first = checkpoint_to_outbox(platform.audit, platform.store)
    again = checkpoint_to_outbox(platform.audit, platform.store)
    assert first is not None
    assert again == first
    entries = stream_entries(platform.store.db, "audit")
    assert len(entries) == 1
    assert entries[0].kind == "audit.checkpoint"
    assert set(entries[0].payload) == {"seq", "entry_hash", "signed_at", "key_id", "signature"}
