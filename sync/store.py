"""The sync agent's own state on the appliance (last success, last error, breaker).

Kept apart from the outbox tables (platform) because only the agent writes it; ``hygie sync
status``, the API and the health check read it from any process.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from appliance.store import Migration, Store

STATE_TABLE = "sync_agent_state"
FEED_CURSOR = "feed"
"""Name of the outbox cursor holding the last feed position received."""

MIGRATIONS: tuple[Migration, ...] = (
    Migration.sql(
        "sync",
        1,
        "sync agent state",
        f"CREATE TABLE {STATE_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
        "updated_at TEXT NOT NULL)",
    ),
)


def put_state(store: Store, **values: Any) -> None:
    """Record agent facts (JSON values) in one transaction."""
    now = datetime.now(UTC).isoformat()
    with store.write() as db:
        for key, value in values.items():
            db.execute(
                "INSERT INTO sync_agent_state (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                [key, json.dumps(value), now],
            )


def get_state(store: Store) -> dict[str, Any]:
    rows = store.db.execute("SELECT key, value FROM sync_agent_state").fetchall()
    return {str(key): json.loads(value) for key, value in rows}
