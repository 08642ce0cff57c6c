"""Who is calling: the verified subject of an access token."""

from __future__ import annotations

import msgspec


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """A user or machine client, as proven by its access token."""

    subject: str
    role: str
    scopes: frozenset[str]
    client_id: str = ""
    token_id: str = ""
    issued_at: int = 0
    """``iat`` of the token: a subject revoked after this instant is refused."""
    auth_methods: frozenset[str] = frozenset()
    """``amr`` of the login behind the token (``pwd``, ``pin``, ``fed``, ``cps``)."""

    def has_scopes(self, required: frozenset[str]) -> bool:
        return all(scope_allows(self.scopes, scope) for scope in required)


def scope_allows(granted: frozenset[str], required: str) -> bool:
    """``patients:read`` is allowed by itself or by a ``patients:*`` wildcard grant."""
    if required in granted:
        return True
    prefix = required.split(":", 1)[0]
    return f"{prefix}:*" in granted
