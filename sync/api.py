"""``GET /api/v1/sync/status``: the link to the cloud as the admin screen shows it."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from appliance.platform import Platform
from appliance.security import requires
from sync import logic
from sync.models import SyncStatus


class SyncStatusController(Controller):
    path = "/api/v1/sync"
    tags = ["sync"]

    @get("/status", guards=[requires("admin:sync")], sync_to_thread=True)
    def sync_status(self, platform: NamedDependency[Platform]) -> SyncStatus:
        """Backlog size, oldest pending item, last success, breaker state (no patient data)."""
        return logic.status(platform.store, platform.settings)
