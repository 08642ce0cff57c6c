"""Authentication and authorisation primitives shared by every controller.

Every non-public route handler declares the scopes it needs with :func:`requires`; the
bearer-token middleware turns a verified access token into a :class:`Principal` and refuses
revoked ones. The identity service (users, roles, OAuth flows) issues those tokens; this
package only signs and checks them, keeps the denylist and limits request rates.
"""

from appliance.security.guards import PUBLIC, ScopeGuard, declared_scopes, requires
from appliance.security.principal import Principal, scope_allows
from appliance.security.tokens import InvalidTokenError, IssuedToken, TokenService

__all__ = [
    "PUBLIC",
    "InvalidTokenError",
    "IssuedToken",
    "Principal",
    "ScopeGuard",
    "TokenService",
    "declared_scopes",
    "requires",
    "scope_allows",
]
