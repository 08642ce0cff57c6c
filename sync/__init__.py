"""Offline-first replication: the sync agent (appliance side) and the cloud sync service
(``sync.server``). The outbox and inbox tables themselves live in the platform
(:mod:`appliance.outbox`) so every service can write them in its own transaction."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from huey import crontab

from appliance.plugin import ServicePlugin
from sync.api import SyncStatusController
from sync.cli import sync as sync_cli
from sync.store import MIGRATIONS

if TYPE_CHECKING:
    from huey import Huey

    from appliance.platform import Platform

log = logging.getLogger("hygie.sync")


def register_tasks(huey: Huey, platform: Platform) -> None:
    """Every minute: push the outbox and pull the feed when sync is configured."""

    @huey.periodic_task(crontab(minute="*"))  # type: ignore[untyped-decorator]
    def sync_push_pull() -> None:
        from sync.logic import SyncNotConfigured, run_once

        if not platform.settings.sync_url:
            return
        try:
            report = run_once(platform.store, platform.settings)
        except SyncNotConfigured as exc:
            log.warning("sync not configured: %s", exc)
            return
        if report is not None and not report.ok:
            log.warning("sync run incomplete: %s", report.error or report.refused)


PLUGIN = ServicePlugin(
    name="sync",
    controllers=(SyncStatusController,),
    migrations=MIGRATIONS,
    register_tasks=register_tasks,
    cli=sync_cli,
)

__all__ = ["PLUGIN"]
