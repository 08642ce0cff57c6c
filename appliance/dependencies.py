"""Litestar dependencies that hand the opened platform to controllers.

When the store could not be opened (wrong or missing key), every handler that needs it
answers 503 with the reason, while health probes keep answering.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from appliance.audit import AuditEvent, AuditLog
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import Principal
from appliance.store import Store


class RequestContext(msgspec.Struct, frozen=True, kw_only=True):
    """Who asks, from where, under which request id: what an audit entry needs."""

    actor: str
    role: str
    client_addr: str
    request_id: str

    def audit_event(
        self,
        action: str,
        object_type: str,
        object_id: str,
        *,
        purpose: str,
        outcome: str = "success",
    ) -> AuditEvent:
        return AuditEvent(
            actor=self.actor,
            role=self.role,
            action=action,
            object_type=object_type,
            object_id=object_id,
            purpose=purpose,
            client_addr=self.client_addr,
            outcome=outcome,
            request_id=self.request_id,
        )


def _client_addr(request: Request[Any, Any, Any]) -> str:
    host = request.client.host if request.client else ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "unknown"


def provide_platform(state: State) -> Platform:
    platform: Platform | None = state.get("platform")
    if platform is None:
        raise Problem(
            503,
            "store-unavailable",
            f"the encrypted store is not open: {state.get('platform_error', 'not started')}",
        )
    return platform


def provide_store(platform: NamedDependency[Platform]) -> Store:
    return platform.store


def provide_audit(platform: NamedDependency[Platform]) -> AuditLog:
    return platform.audit


def provide_request_context(request: Request[Any, Any, Any]) -> RequestContext:
    principal = request.scope.get("auth")
    actor = principal.subject if isinstance(principal, Principal) else "anonymous"
    role = principal.role if isinstance(principal, Principal) else "anonymous"
    return RequestContext(
        actor=actor,
        role=role or "none",
        client_addr=_client_addr(request),
        request_id=str(request.scope.get("state", {}).get("request_id", "")),
    )


DEPENDENCIES = {
    "platform": Provide(provide_platform, sync_to_thread=False),
    "store": Provide(provide_store, sync_to_thread=False),
    "audit": Provide(provide_audit, sync_to_thread=False),
    "ctx": Provide(provide_request_context, sync_to_thread=False),
}
