"""Encrypted, verified backups and restore (``hygie backup ...``), and the daily backup.

Mounted like a service (a :class:`ServicePlugin`) so the CLI and the worker pick it up
through the registry; it is platform code because it must see every database.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from huey import crontab

from appliance.backup.cli import backup as backup_cli
from appliance.backup.core import (
    BackupError,
    BackupReport,
    create_backup,
    load_backup_key,
    prune,
    restore_backup,
    scheduled_backups,
    table_counts,
    verify_backup,
)
from appliance.backup.crypto import KeySource
from appliance.keys import SecretError
from appliance.plugin import ServicePlugin

if TYPE_CHECKING:
    from huey import Huey

    from appliance.config import Settings
    from appliance.platform import Platform

log = logging.getLogger("hygie.backup")


def backup_due(settings: Settings, now: datetime) -> bool:
    """Due once a day, at or after ``backup_hour`` local time, catching up a missed day."""
    local = now.astimezone(ZoneInfo(settings.timezone))
    if local.hour < settings.backup_hour:
        return False
    existing = scheduled_backups(settings.backup_path)
    if not existing:
        return True
    latest = datetime.fromtimestamp(existing[-1].stat().st_mtime, UTC)
    return now - latest > timedelta(hours=20)


def run_scheduled_backup(settings: Settings, now: datetime | None = None) -> BackupReport | None:
    """The worker's daily backup with the key file, then retention; ``None`` if not due."""
    if not backup_due(settings, now or datetime.now(UTC)):
        return None
    try:
        key = load_backup_key(settings)
    except SecretError as exc:
        log.warning("scheduled backup skipped: %s", exc)
        return None
    report = create_backup(settings, KeySource(key=key), log2_n=settings.backup_kdf_log2_n)
    removed = prune(settings.backup_path, settings.backup_retention)
    log.info("backup %s written and verified; %d old backups removed", report.path, len(removed))
    return report


def register_tasks(huey: Huey, platform: Platform) -> None:
    @huey.periodic_task(crontab(minute="17"))  # type: ignore[untyped-decorator]
    def daily_backup() -> None:
        try:
            run_scheduled_backup(platform.settings)
        except BackupError:
            log.exception("scheduled backup failed")


PLUGIN = ServicePlugin(name="backup", register_tasks=register_tasks, cli=backup_cli)

__all__ = [
    "PLUGIN",
    "BackupError",
    "BackupReport",
    "KeySource",
    "create_backup",
    "prune",
    "restore_backup",
    "run_scheduled_backup",
    "table_counts",
    "verify_backup",
]
