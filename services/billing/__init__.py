"""Billing: invoices and payments per patient and per act, reconciliation of the
Assurance Maladie's returns, accounting export (CSV, FEC) and monthly summary; the HTTP API
``/api/v1/billing`` of billing and SESAM-Vitale. See docs/billing.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.plugin import ServicePlugin
from services.billing.api import BillingController
from services.billing.cli import billing
from services.billing.store import MIGRATIONS, process_inbox, reconcile_return

if TYPE_CHECKING:
    from huey import Huey

    from appliance.platform import Platform

ACTOR_WORKER = "system:worker"


def register_tasks(huey: Huey, platform: Platform) -> None:
    """Every minute, reconcile the return files the sync agent brought back."""
    from huey import crontab

    @huey.periodic_task(crontab(minute="*"))  # type: ignore[untyped-decorator]
    def billing_process_returns() -> None:
        process_inbox(platform.store, actor=ACTOR_WORKER)


PLUGIN = ServicePlugin(
    name="billing",
    controllers=(BillingController,),
    migrations=MIGRATIONS,
    register_tasks=register_tasks,
    cli=billing,
)

__all__ = ["PLUGIN", "process_inbox", "reconcile_return"]
