"""Liveness and readiness probes.

Ready means the appliance can serve the counter: the encrypted stores open with their key, the
schema is current, a worker has sent a recent heartbeat and the disk is not about to fill.
Each failing check says why, so an operator does not have to guess from a bare 503.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import State

from appliance.keys import SECRET_FACTORIES, SecretError, read_secret
from appliance.platform import Platform
from appliance.problems import problem_response
from appliance.security import PUBLIC
from appliance.store import Migration, StoreError, pending_migrations
from appliance.tasks import last_heartbeat


class Check(msgspec.Struct, omit_defaults=True):
    ok: bool
    reason: str | None = None


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, Check]


class Liveness(msgspec.Struct):
    status: str


def _check(fn: Callable[[], str | None]) -> Check:
    try:
        problem = fn()
    except StoreError as exc:
        return Check(ok=False, reason=str(exc))
    return Check(ok=problem is None, reason=problem)


def readiness(state: State, migrations: Sequence[Migration]) -> Readiness:
    platform: Platform | None = state.get("platform")
    settings = state["settings"]
    checks: dict[str, Check] = {}
    if platform is None:
        reason = state.get("platform_error", "not started")
        checks["store"] = Check(ok=False, reason=reason)
    else:
        checks["store"] = _check(lambda: platform.store.check())
        checks["audit_store"] = _check(lambda: platform.audit.store.check())

        def schema() -> str | None:
            pending = pending_migrations(platform.store, migrations)
            if pending:
                names = ", ".join(f"{m.component} {m.version}" for m in pending)
                return f"pending migrations ({names}): run 'hygie db migrate'"
            return None

        checks["schema"] = _check(schema)

        def worker() -> str | None:
            beat = last_heartbeat(platform.store)
            if beat is None:
                return "no worker heartbeat yet: is 'hygie worker' running?"
            age = (datetime.now(UTC) - beat).total_seconds()
            if age > settings.heartbeat_max_age_s:
                limit = settings.heartbeat_max_age_s
                return f"last worker heartbeat {int(age)} s ago (limit {limit} s)"
            return None

        checks["worker"] = _check(worker)

    def secrets() -> str | None:
        missing = []
        for name in SECRET_FACTORIES:
            try:
                read_secret(settings, name)
            except SecretError:
                missing.append(name)
        return f"secrets missing or unreadable: {', '.join(missing)}" if missing else None

    checks["secrets"] = _check(secrets)

    def disk() -> str | None:
        free_mb = shutil.disk_usage(settings.data_path).free // (1024 * 1024)
        if free_mb < settings.min_free_disk_mb:
            return f"{free_mb} MiB free on the data disk (minimum {settings.min_free_disk_mb} MiB)"
        return None

    checks["disk"] = _check(disk)
    ok = all(check.ok for check in checks.values())
    return Readiness(status="ready" if ok else "not_ready", checks=checks)


class HealthController(Controller):
    """Probes for systemd, the load balancer of a multi-box install, and the counter UI."""

    path = "/health"
    tags = ["health"]
    opt = PUBLIC

    @get("/live", sync_to_thread=False)
    def live(self) -> Liveness:
        """The process answers HTTP."""
        return Liveness(status="alive")

    @get("/ready", sync_to_thread=True)
    def ready(self, request: Request[Any, Any, Any], state: State) -> Response[Any]:
        """Stores open with their key, schema current, worker alive, disk not full.

        When not ready the answer is a 503 problem detail whose ``checks`` member says which
        check failed and why.
        """
        result = readiness(state, state["domain_migrations"])
        if result.status == "ready":
            return Response(result)
        failing = ", ".join(name for name, check in result.checks.items() if not check.ok)
        return problem_response(
            request,
            503,
            f"not ready: {failing}",
            problem_type="not-ready",
            extra=msgspec.to_builtins({"readiness": result.status, "checks": result.checks}),
        )
