"""Authentication and authorisation primitives shared by every controller.

Every non-public route handler declares the scopes it needs with :func:`requires`; the
bearer-token middleware turns a verified access token into a :class:`Principal`. The identity
service (users, roles, OAuth flows) issues those tokens; this package only checks them.
"""

from appliance.security.guards import PUBLIC, ScopeGuard, declared_scopes, requires
from appliance.security.principal import Principal, scope_allows
from appliance.security.tokens import InvalidTokenError, TokenService

__all__ = [
    "PUBLIC",
    "InvalidTokenError",
    "Principal",
    "ScopeGuard",
    "TokenService",
    "declared_scopes",
    "requires",
    "scope_allows",
]
