"""Status and one agent run, shared by the CLI, the API and the worker's periodic task."""

from __future__ import annotations

import asyncio
import threading

from appliance.config import Settings
from appliance.outbox import backlog_size, cursor_position, last_sequence, oldest_pending
from appliance.resilience import Breakers, RetryPolicy
from appliance.store import Store
from sync.agent import SyncAgent, SyncConfig, SyncNotConfigured, single_run
from sync.models import PendingItem, RunReport, SyncStatus
from sync.server.pki import PkiError, tenant_of_pem_file
from sync.store import FEED_CURSOR, get_state

_breakers_lock = threading.Lock()
_breakers: dict[int, Breakers] = {}


def process_breakers(settings: Settings) -> Breakers:
    """One breaker set per process, so consecutive runs of the worker share its state."""
    with _breakers_lock:
        key = id(settings)
        if key not in _breakers:
            _breakers[key] = Breakers.from_settings(settings)
        return _breakers[key]


def status(store: Store, settings: Settings) -> SyncStatus:
    """Backlog, oldest pending item, last success and breaker state (cheap: index reads)."""
    db = store.db
    oldest = oldest_pending(db)
    state = get_state(store)
    tenant = None
    try:
        from appliance.keys import secret_path
        from sync.agent import CLIENT_CERT

        cert = secret_path(settings, CLIENT_CERT)
        tenant = tenant_of_pem_file(cert) if cert.exists() else None
    except (PkiError, ValueError, OSError):
        tenant = None
    return SyncStatus(
        configured=bool(settings.sync_url) and tenant is not None,
        tenant=tenant,
        backlog=backlog_size(db),
        oldest_pending=None
        if oldest is None
        else PendingItem(oldest.seq, oldest.stream, oldest.kind, oldest.created_at),
        acked_through=cursor_position(db),
        last_sequence=last_sequence(db),
        feed_position=cursor_position(db, FEED_CURSOR),
        last_success_at=state.get("last_success_at"),
        last_attempt_at=state.get("last_attempt_at"),
        last_error=state.get("last_error"),
        last_refusal=state.get("last_refusal"),
        breaker=str(state.get("breaker") or "closed"),
    )


def run_once(
    store: Store,
    settings: Settings,
    *,
    breakers: Breakers | None = None,
    max_batches: int | None = None,
) -> RunReport | None:
    """Push and pull once; ``None`` when another agent of this appliance is running.

    Raises :class:`SyncNotConfigured` when sync is off or a secret is missing.
    """
    config = SyncConfig.from_settings(settings)
    with single_run(settings.data_path) as mine:
        if not mine:
            return None
        agent = SyncAgent(
            store,
            config,
            RetryPolicy.from_settings(settings),
            breakers or process_breakers(settings),
        )
        return asyncio.run(agent.run(max_batches=max_batches))


__all__ = ["SyncNotConfigured", "run_once", "status"]
