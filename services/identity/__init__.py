"""Identity and access: users and roles, passwords with lockout, the OAuth 2.0 authorization
server and OpenID Connect provider, quick user switch by PIN, optional federation with an
external provider (Pro Santé Connect), and the CPS card extension point.

Three command groups are mounted: ``hygie users``, ``hygie clients`` and ``hygie tokens``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from appliance.plugin import ServicePlugin
from appliance.security.revocation import purge_expired
from services.identity import store as repo
from services.identity.api import ClientAdminController, SelfController, UserAdminController
from services.identity.cli import clients, tokens, users
from services.identity.oauth_api import OAuthController

if TYPE_CHECKING:
    from huey import Huey

    from appliance.platform import Platform


def purge(platform: Platform) -> int:
    """Drop expired login requests, codes, tokens and denylist rows."""
    now = time.time()
    with platform.store.write() as db:
        removed = repo.purge(db, now)
        removed += repo.purge_failures(db, now, platform.settings.lockout_reset_after_s)
    return removed + purge_expired(platform.store, int(now))


def register_tasks(huey: Huey, platform: Platform) -> None:
    from huey import crontab

    @huey.periodic_task(crontab(minute="*/15"))  # type: ignore[untyped-decorator]
    def identity_purge() -> None:
        purge(platform)


PLUGIN = ServicePlugin(
    name="identity",
    controllers=(OAuthController, UserAdminController, ClientAdminController, SelfController),
    migrations=repo.MIGRATIONS,
    register_tasks=register_tasks,
    cli=users,
)
CLIENTS_CLI = ServicePlugin(name="identity-clients", cli=clients)
TOKENS_CLI = ServicePlugin(name="identity-tokens", cli=tokens)
PLUGINS: tuple[ServicePlugin, ...] = (PLUGIN, CLIENTS_CLI, TOKENS_CLI)
"""The identity service and its two extra command groups (one group per plugin)."""

__all__ = ["PLUGIN", "PLUGINS", "purge"]
