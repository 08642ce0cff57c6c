"""Storage of checks, FSE, lots and return files, and the transactional operations on them.

FSE and lots are versioned (every state change is a new immutable version); small index
tables answer the list queries (by state, by patient, by lot) without decoding every
version. A lot is handed to the sync outbox in the same transaction as its creation, so a
crash can never leave a lot marked sent that the outbox does not hold, or the reverse.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import sqlite_utils

from appliance.outbox import enqueue
from appliance.store import Migration, Store, Versioned, VersionedTable
from services.sesam_vitale.logic import can_move, parse_return
from services.sesam_vitale.models import (
    ArlRecord,
    CheckKind,
    CheckRecord,
    Fse,
    FseState,
    Lot,
    PaymentRecord,
    ReturnFile,
    RightsAnswer,
)

COMPONENT = "sesam_vitale"
OUTBOX_STREAM = "teletransmission"
OUTBOX_KIND = "fse.lot"
"""What the sync agent seals for the insurance gateway and the cloud relays (sync/envelope.py
RELAY_STREAM, RELAY_KIND)."""
INBOX_STREAM = "teletransmission"

CHECKS = VersionedTable("sesam_checks", CheckRecord)
FSES = VersionedTable("sesam_fse", Fse)
LOTS = VersionedTable("sesam_lots", Lot)

MIGRATIONS: tuple[Migration, ...] = (
    CHECKS.create_table_migration(COMPONENT, 1),
    FSES.create_table_migration(COMPONENT, 2),
    LOTS.create_table_migration(COMPONENT, 3),
    Migration.sql(
        COMPONENT,
        4,
        "indexes, counters and return files",
        """
        CREATE TABLE sesam_check_index (
            check_id TEXT PRIMARY KEY, patient_id TEXT NOT NULL, kind TEXT NOT NULL,
            status TEXT NOT NULL, requested_at TEXT NOT NULL);
        CREATE INDEX sesam_check_patient ON sesam_check_index (patient_id, kind, requested_at);
        CREATE INDEX sesam_check_status ON sesam_check_index (status);
        CREATE TABLE sesam_fse_index (
            fse_id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE, patient_id TEXT NOT NULL,
            state TEXT NOT NULL, lot_id TEXT, act_date TEXT NOT NULL,
            bpm_cycle_id TEXT NOT NULL, bpm_step TEXT NOT NULL);
        CREATE INDEX sesam_fse_state ON sesam_fse_index (state, number);
        CREATE INDEX sesam_fse_patient ON sesam_fse_index (patient_id, number);
        CREATE INDEX sesam_fse_step ON sesam_fse_index (bpm_cycle_id, bpm_step);
        CREATE TABLE sesam_lot_index (
            lot_id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE, state TEXT NOT NULL);
        CREATE TABLE sesam_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE sesam_returns (
            sha256 TEXT PRIMARY KEY, received_at TEXT NOT NULL, emitter TEXT NOT NULL,
            created_on TEXT NOT NULL, text TEXT NOT NULL);
        CREATE TRIGGER sesam_returns_no_update BEFORE UPDATE ON sesam_returns
        BEGIN SELECT RAISE(ABORT, 'return files are immutable'); END;
        CREATE TRIGGER sesam_returns_no_delete BEFORE DELETE ON sesam_returns
        BEGIN SELECT RAISE(ABORT, 'return files are immutable'); END
        """,
    ),
)


class StateError(Exception):
    """A state change the life cycle does not allow (HTTP 409); French message."""


def next_number(db: sqlite_utils.Database, name: str) -> int:
    row = db.execute("SELECT value FROM sesam_counters WHERE name = ?", [name]).fetchone()
    value = (int(row[0]) if row else 0) + 1
    db.execute(
        "INSERT INTO sesam_counters (name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        [name, value],
    )
    return value


def next_fse_number(db: sqlite_utils.Database) -> int:
    """The next FSE number of the pharmacy (numbers are never reused)."""
    return next_number(db, "fse")


# --------------------------------------------------------------------------- checks


def save_check(
    db: sqlite_utils.Database,
    record: CheckRecord,
    *,
    actor: str,
    check_id: str | None = None,
    expected_version: int = 0,
) -> Versioned[CheckRecord]:
    check_id = check_id or str(uuid.uuid4())
    stored = CHECKS.append(db, check_id, record, actor=actor, expected_version=expected_version)
    db.execute(
        "INSERT INTO sesam_check_index (check_id, patient_id, kind, status, requested_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(check_id) DO UPDATE SET status = excluded.status",
        [check_id, record.patient_id, record.kind, record.status, record.requested_at.isoformat()],
    )
    return stored


def get_check(store: Store, check_id: str) -> Versioned[CheckRecord] | None:
    return CHECKS.get(store.db, check_id)


def checks_of(
    store: Store, patient_id: str, kind: CheckKind | None = None
) -> list[Versioned[CheckRecord]]:
    """A patient's checks, most recent first."""
    rows = store.db.execute(
        "SELECT check_id FROM sesam_check_index WHERE patient_id = ? "
        "AND (? IS NULL OR kind = ?) ORDER BY requested_at DESC, check_id",
        [patient_id, kind, kind],
    ).fetchall()
    found = (CHECKS.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None]


def unchecked(store: Store, limit: int = 100) -> list[Versioned[CheckRecord]]:
    """Queued checks, oldest first (the worker re-runs them)."""
    rows = store.db.execute(
        "SELECT check_id FROM sesam_check_index WHERE status = 'unchecked' "
        "ORDER BY requested_at LIMIT ?",
        [limit],
    ).fetchall()
    found = (CHECKS.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None]


def latest_rights(store: Store, patient_id: str) -> RightsAnswer | None:
    """The answer of the patient's latest completed ADRi check (None when never checked)."""
    for item in checks_of(store, patient_id, "rights"):
        record = item.entity
        if record.status == "checked" and record.rights is not None:
            return record.rights
        if record.status == "not_found":
            return RightsAnswer(status="not_found")
    return None


# --------------------------------------------------------------------------- FSE


def _index_fse(db: sqlite_utils.Database, fse_id: str, fse: Fse) -> None:
    db.execute(
        "INSERT INTO sesam_fse_index (fse_id, number, patient_id, state, lot_id, act_date, "
        "bpm_cycle_id, bpm_step) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(fse_id) DO UPDATE SET state = excluded.state, lot_id = excluded.lot_id",
        [
            fse_id,
            fse.number,
            fse.patient_id,
            fse.state,
            fse.lot_id,
            fse.act_date.isoformat(),
            fse.bpm_cycle_id,
            fse.bpm_step,
        ],
    )


def billed_step(db: sqlite_utils.Database, cycle_id: str, step: str) -> str | None:
    """The FSE already billing this step of this cycle (rejected ones do not count)."""
    row = db.execute(
        "SELECT fse_id FROM sesam_fse_index WHERE bpm_cycle_id = ? AND bpm_step = ? "
        "AND state != 'rejected' LIMIT 1",
        [cycle_id, step],
    ).fetchone()
    return str(row[0]) if row else None


def create_fse(db: sqlite_utils.Database, fse: Fse, *, actor: str) -> Versioned[Fse]:
    fse_id = str(uuid.uuid4())
    stored = FSES.append(db, fse_id, fse, actor=actor, expected_version=0)
    _index_fse(db, fse_id, fse)
    return stored


def get_fse(db: sqlite_utils.Database, fse_id: str) -> Versioned[Fse] | None:
    return FSES.get(db, fse_id)


def fse_history(store: Store, fse_id: str) -> list[Versioned[Fse]]:
    return FSES.history(store.db, fse_id)


def move_fse(
    db: sqlite_utils.Database, item: Versioned[Fse], target: FseState, *, actor: str, **changes: Any
) -> Versioned[Fse]:
    """A new version of the FSE in state ``target`` (raises :class:`StateError`)."""
    current = item.entity.state
    if not can_move(current, target):
        raise StateError(
            f"La FSE n° {item.entity.number} est « {current} » : "
            f"elle ne peut pas passer à « {target} »."
        )
    updated = msgspec.structs.replace(item.entity, state=target, **changes)
    stored = FSES.append(db, item.entity_id, updated, actor=actor, expected_version=item.version)
    _index_fse(db, item.entity_id, updated)
    return stored


def list_fses(
    store: Store,
    *,
    states: Sequence[str] | None = None,
    patient_id: str | None = None,
    lot_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Versioned[Fse]]:
    clauses, params = ["1 = 1"], []  # type: ignore[var-annotated]
    if states:
        clauses.append(f"state IN ({', '.join('?' for _ in states)})")
        params.extend(states)
    if patient_id:
        clauses.append("patient_id = ?")
        params.append(patient_id)
    if lot_id:
        clauses.append("lot_id = ?")
        params.append(lot_id)
    rows = store.db.execute(
        f"SELECT fse_id FROM sesam_fse_index WHERE {' AND '.join(clauses)} "  # noqa: S608 - fixed clauses
        "ORDER BY number LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    found = (FSES.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None]


# --------------------------------------------------------------------------- lots


def lot_payload(lot_id: str, lot: Lot, fses: Sequence[Versioned[Fse]]) -> dict[str, Any]:
    """What leaves the box for one lot: the signed FSEs (their NIRs included: the
    Assurance Maladie needs them; the outbox encrypts payloads end to end)."""
    return {
        "lot_id": lot_id,
        "number": lot.number,
        "total_amo_cents": lot.total_amo_cents,
        # What the insurance gateway pays for the lot: the sum of the AMO shares.
        "total_amount_cents": lot.total_amo_cents,
        "fses": [
            {"fse_id": item.entity_id, "fse": msgspec.to_builtins(item.entity)} for item in fses
        ],
    }


def create_lot(
    db: sqlite_utils.Database, fses: Sequence[Versioned[Fse]], *, actor: str
) -> tuple[Versioned[Lot], dict[str, Any]]:
    """Group signed FSEs into a lot, mark them sent and enqueue the lot in the outbox, all in
    the caller's transaction. Returns the lot and the payload handed to the outbox."""
    lot_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    lot = Lot(
        number=next_number(db, "lot"),
        fse_ids=tuple(item.entity_id for item in fses),
        total_amo_cents=sum(item.entity.pricing.amo_cents for item in fses),
        created_at=now,
    )
    LOTS.append(db, lot_id, lot, actor=actor, expected_version=0)
    sent = [move_fse(db, item, "sent", actor=actor, lot_id=lot_id) for item in fses]
    payload = lot_payload(lot_id, lot, sent)
    seq = enqueue(
        db,
        stream=OUTBOX_STREAM,
        kind="fse.lot",
        payload=payload,
        idempotency_key=f"fse-lot:{lot_id}",
    )
    stored = LOTS.append(
        db,
        lot_id,
        msgspec.structs.replace(lot, state="sent", outbox_sequence=seq),
        actor=actor,
        expected_version=1,
    )
    db.execute(
        "INSERT INTO sesam_lot_index (lot_id, number, state) VALUES (?, ?, 'sent')",
        [lot_id, lot.number],
    )
    return stored, payload


def get_lot(db: sqlite_utils.Database, lot_id: str) -> Versioned[Lot] | None:
    return LOTS.get(db, lot_id)


def lot_history(store: Store, lot_id: str) -> list[Versioned[Lot]]:
    return LOTS.history(store.db, lot_id)


def list_lots(store: Store, limit: int = 100, offset: int = 0) -> list[Versioned[Lot]]:
    rows = store.db.execute(
        "SELECT lot_id FROM sesam_lot_index ORDER BY number DESC LIMIT ? OFFSET ?", [limit, offset]
    ).fetchall()
    found = (LOTS.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None]


def _move_lot(
    db: sqlite_utils.Database, item: Versioned[Lot], state: str, code: str, label: str, actor: str
) -> None:
    updated = msgspec.structs.replace(item.entity, state=state, ack_code=code, ack_label=label)
    LOTS.append(db, item.entity_id, updated, actor=actor, expected_version=item.version)
    db.execute("UPDATE sesam_lot_index SET state = ? WHERE lot_id = ?", [state, item.entity_id])


# --------------------------------------------------------------------------- returns


class ReturnOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one return file changed."""

    sha256: str
    duplicate: bool
    acknowledged_lots: list[str] = []
    rejected_lots: list[str] = []
    paid: list[str] = []
    rejected: list[str] = []
    ignored: list[str] = []
    """Records naming an unknown FSE or lot, or one already in a final state."""


def apply_return(
    db: sqlite_utils.Database, text: str, *, actor: str
) -> tuple[ReturnFile, ReturnOutcome]:
    """Parse a return file and apply it once (a file already applied changes nothing).

    Raises ``ReturnFormatError`` for a malformed file: nothing is stored then.
    """
    parsed = parse_return(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return parsed, apply_records(db, parsed, key=digest, text=text, actor=actor)


def gateway_return(
    db: sqlite_utils.Database, kind: str, payload: dict[str, Any]
) -> tuple[ReturnFile, list[str]] | None:
    """The records of one item the sync relay brought back from the insurance gateway
    (``fse.ack``: a lot's ARL, negative when ``status`` is not ``accepted``;
    ``fse.rejection``: a negative ARL; ``fse.payment``: a payment of a whole lot), or ``None`` for
    another kind. A lot payment is spread on its FSE only when its amount is exactly the
    lot's AMO total; otherwise nothing is marked paid and a note says why."""
    lot_id = payload.get("lot_id")
    today = datetime.now(UTC).date()
    empty = ReturnFile(
        emitter=str(payload.get("gateway", "gateway")), created_on=today, acks=(), payments=()
    )
    if kind in ("fse.ack", "fse.rejection"):
        if not isinstance(lot_id, str):
            return empty, [f"ARL sans lot ({payload.get('reason')})"]
        accepted = kind == "fse.ack" and payload.get("status") == "accepted"
        label = payload.get("reason") or ("Lot accepté" if accepted else "Lot rejeté")
        ack = ArlRecord(
            lot_id=lot_id, accepted=accepted, code="000" if accepted else "REJ", label=str(label)
        )
        return msgspec.structs.replace(empty, acks=(ack,)), []
    if kind != "fse.payment":
        return None
    lot = LOTS.get(db, lot_id) if isinstance(lot_id, str) else None
    if lot is None:
        return empty, [f"paiement d'un lot inconnu ({lot_id})"]
    amount = payload.get("amount_cents")
    if amount != lot.entity.total_amo_cents:
        return empty, [
            f"paiement du lot {lot.entity.number} : {amount} centimes au lieu de "
            f"{lot.entity.total_amo_cents}, à rapprocher à la main"
        ]
    try:
        paid_on = date.fromisoformat(str(payload.get("paid_on")))
    except ValueError:
        return empty, [f"paiement du lot {lot.entity.number} sans date lisible"]
    payments = []
    for fse_id in lot.entity.fse_ids:
        item = FSES.get(db, fse_id)
        if item is None:
            continue
        payments.append(
            PaymentRecord(
                lot_id=lot.entity_id,
                fse_id=fse_id,
                fse_number=item.entity.number,
                paid=True,
                amount_cents=item.entity.pricing.amo_cents,
                payment_date=paid_on,
                code="000",
                label="Paiement du lot",
            )
        )
    return msgspec.structs.replace(empty, payments=tuple(payments)), []


def apply_records(
    db: sqlite_utils.Database, parsed: ReturnFile, *, key: str, text: str, actor: str
) -> ReturnOutcome:
    """Apply parsed return records once per ``key`` (the file's hash, or the inbox item)."""
    digest = key
    if db.execute("SELECT 1 FROM sesam_returns WHERE sha256 = ?", [digest]).fetchone():
        return ReturnOutcome(sha256=digest, duplicate=True)
    db.execute(
        "INSERT INTO sesam_returns (sha256, received_at, emitter, created_on, text) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            digest,
            datetime.now(UTC).isoformat(),
            parsed.emitter,
            parsed.created_on.isoformat(),
            text,
        ],
    )
    outcome = ReturnOutcome(sha256=digest, duplicate=False)
    for ack in parsed.acks:
        lot = LOTS.get(db, ack.lot_id)
        if lot is None or lot.entity.state != "sent":
            outcome.ignored.append(f"ARL {ack.lot_id}")
            continue
        state = "acknowledged" if ack.accepted else "rejected"
        _move_lot(db, lot, state, ack.code, ack.label, actor)
        (outcome.acknowledged_lots if ack.accepted else outcome.rejected_lots).append(ack.lot_id)
        for fse_id in lot.entity.fse_ids:
            item = FSES.get(db, fse_id)
            if item is None or not can_move(item.entity.state, state):
                continue
            if ack.accepted:
                move_fse(db, item, "acknowledged", actor=actor)
            else:
                move_fse(
                    db,
                    item,
                    "rejected",
                    actor=actor,
                    rejection_code=ack.code,
                    rejection_label=ack.label,
                )
                outcome.rejected.append(fse_id)
    for pay in parsed.payments:
        item = FSES.get(db, pay.fse_id)
        if item is None or item.entity.lot_id != pay.lot_id or item.entity.number != pay.fse_number:
            outcome.ignored.append(f"RSP {pay.fse_id}")
            continue
        target: FseState = "paid" if pay.paid else "rejected"
        if not can_move(item.entity.state, target):
            outcome.ignored.append(f"RSP {pay.fse_id}")
            continue
        if pay.paid:
            move_fse(
                db, item, "paid", actor=actor, paid_cents=pay.amount_cents, paid_on=pay.payment_date
            )
            outcome.paid.append(pay.fse_id)
        else:
            move_fse(
                db,
                item,
                "rejected",
                actor=actor,
                rejection_code=pay.code,
                rejection_label=pay.label,
            )
            outcome.rejected.append(pay.fse_id)
    return outcome


def received_returns(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    rows = store.db.execute(
        "SELECT sha256, received_at, emitter, created_on FROM sesam_returns "
        "ORDER BY received_at DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [
        {"sha256": r[0], "received_at": r[1], "emitter": r[2], "created_on": r[3]} for r in rows
    ]


def today_utc() -> date:
    return datetime.now(UTC).date()
