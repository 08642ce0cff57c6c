"""Route guards: each handler states the scopes it needs, and the guard enforces them.

Keeping the declaration on the handler (``guards=[requires("patients:read")]``) lets a test
walk every route of the app and prove that none was left unguarded.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from appliance.security.principal import Principal

PUBLIC: dict[str, Any] = {"exclude_from_auth": True, "public": True}
"""``opt`` for handlers that are deliberately open (health probes, discovery documents)."""


class ScopeGuard:
    """Callable guard that remembers which scopes it requires (for introspection)."""

    def __init__(self, scopes: frozenset[str]) -> None:
        self.scopes = scopes

    def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.scope.get("auth")
        if not isinstance(principal, Principal):
            raise NotAuthorizedException("authentication required")
        if not principal.has_scopes(self.scopes):
            missing = sorted(s for s in self.scopes if s not in principal.scopes)
            raise PermissionDeniedException(f"missing scope(s): {', '.join(missing)}")

    def __repr__(self) -> str:
        return f"requires({', '.join(sorted(self.scopes))})"


def requires(*scopes: str) -> ScopeGuard:
    """Guard that admits a principal holding every one of ``scopes``."""
    if not scopes:
        raise ValueError("requires() needs at least one scope; use PUBLIC for open routes")
    return ScopeGuard(frozenset(scopes))


def declared_scopes(handler: BaseRouteHandler) -> frozenset[str] | None:
    """Scopes a handler (with its router and controller layers) requires, or None if none."""
    found: set[str] = set()
    guarded = False
    for layer in handler.ownership_layers:
        for guard in getattr(layer, "guards", None) or ():
            if isinstance(guard, ScopeGuard):
                guarded = True
                found |= guard.scopes
    return frozenset(found) if guarded else None
