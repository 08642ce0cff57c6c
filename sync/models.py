"""What the appliance side of the sync shows: status and run reports."""

from __future__ import annotations

import msgspec


class PendingItem(msgspec.Struct, frozen=True):
    seq: int
    stream: str
    kind: str
    created_at: str


class SyncStatus(msgspec.Struct, frozen=True):
    """Backlog and health of the link to the cloud (``hygie sync status``, API)."""

    configured: bool
    tenant: str | None
    backlog: int
    oldest_pending: PendingItem | None
    acked_through: int
    last_sequence: int
    feed_position: int
    last_success_at: str | None
    last_attempt_at: str | None
    last_error: str | None
    last_refusal: str | None
    breaker: str


class RunReport(msgspec.Struct, frozen=True):
    """What one ``hygie sync run`` did."""

    pushed: int
    batches: int
    duplicates: int
    received: int
    backlog: int
    ok: bool
    error: str | None = None
    refused: str | None = None
