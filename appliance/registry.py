"""The services this appliance mounts (composition root: the only place naming them all)."""

from __future__ import annotations

from appliance.plugin import ServicePlugin
from appliance.store import Migration
from appliance.tasks import PLATFORM_MIGRATIONS
from services.medications import PLUGINS as MEDICATIONS
from services.workstations import PLUGIN as WORKSTATIONS

INSTALLED_SERVICES: tuple[ServicePlugin, ...] = (WORKSTATIONS, *MEDICATIONS)


def domain_migrations(plugins: tuple[ServicePlugin, ...] = INSTALLED_SERVICES) -> list[Migration]:
    """Every migration of the domain database: the platform's, then each service's."""
    migrations = list(PLATFORM_MIGRATIONS)
    for plugin in plugins:
        migrations.extend(plugin.migrations)
    return migrations
