"""HTTP API of identity: accounts administration, self service and the role table.

Every handler declares its scopes. Managing an account of a role that reaches patient data
also needs ``staff:manage`` (checked in :mod:`services.identity.accounts`), so a technical
administrator can create technical accounts and unlock anyone, but never hand out access to
patient data.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter

from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import Principal, requires
from appliance.store import Versioned
from services.identity import store as repo
from services.identity.accounts import Accounts, Actor
from services.identity.models import (
    ClientCreate,
    ClientView,
    OAuthClient,
    PasswordChange,
    PasswordReset,
    PinChange,
    Revoked,
    RoleView,
    User,
    UserCreate,
    UserUpdate,
    UserView,
)
from services.identity.oauth import GRANT_CLIENT, GRANT_CODE, GRANT_REFRESH, AuthorizationServer
from services.identity.roles import ROLES, SCOPES, Role
from services.identity.roles import role_scopes as scopes_of_role

UserIdParam = Annotated[str, Parameter(pattern=r"^u-[0-9a-f]{16}$", max_length=18)]


# --- dependencies -----------------------------------------------------------------------------


def provide_accounts(platform: NamedDependency[Platform]) -> Accounts:
    return Accounts(platform.settings, platform.store, platform.audit)


def provide_server(
    platform: NamedDependency[Platform], accounts: NamedDependency[Accounts]
) -> AuthorizationServer:
    if platform.tokens is None:
        raise Problem(503, "store-unavailable", "the token signing keys are not loaded")
    return AuthorizationServer(
        platform.settings, platform.store, platform.audit, platform.tokens, accounts
    )


def provide_actor(request: Request[Any, Any, Any], ctx: NamedDependency[RequestContext]) -> Actor:
    principal = request.scope.get("auth")
    is_principal = isinstance(principal, Principal)
    return Actor(
        actor=ctx.actor,
        role=ctx.role,
        scopes=principal.scopes if is_principal else frozenset(),
        client_addr=ctx.client_addr,
        request_id=ctx.request_id,
        token_id=principal.token_id if is_principal else "",
    )


IDENTITY_DEPENDENCIES = {
    "accounts": Provide(provide_accounts, sync_to_thread=False),
    "server": Provide(provide_server, sync_to_thread=False),
    "actor": Provide(provide_actor, sync_to_thread=False),
}


# --- views ------------------------------------------------------------------------------------


def user_view(item: Versioned[User], accounts: Accounts | None = None) -> UserView:
    entity = item.entity
    return UserView(
        user_id=entity.user_id,
        username=entity.username,
        display_name=entity.display_name,
        role=entity.role.value,
        rpps=entity.rpps,
        status=entity.status,
        version=item.version,
        recorded_at=item.recorded_at,
        recorded_by=item.recorded_by,
        has_pin=accounts.has_pin(entity.user_id) if accounts else False,
        locked_for_s=accounts.locked_for(entity.user_id) if accounts else 0,
    )


def client_view(item: Versioned[OAuthClient], secret: str | None = None) -> ClientView:
    entity = item.entity
    return ClientView(
        client_id=entity.client_id,
        name=entity.name,
        kind=entity.kind,
        redirect_uris=entity.redirect_uris,
        grant_types=entity.grant_types,
        scopes=entity.scopes,
        status=entity.status,
        version=item.version,
        client_secret=secret,
    )


def role_views() -> list[RoleView]:
    return [
        RoleView(
            role=spec.role.value,
            label=spec.label,
            scopes=sorted(spec.scopes),
            rpps=spec.rpps,
            human=spec.human,
            patient_data=spec.patient_data,
        )
        for spec in ROLES.values()
    ]


# --- clients (shared with the CLI) ------------------------------------------------------------


def create_client(
    accounts: Accounts, body: ClientCreate, actor: Actor
) -> tuple[Versioned[OAuthClient], str | None]:
    """Register a client; a confidential one gets a secret, returned here and never again."""
    from services.identity import logic

    bad_uris = [uri for uri in body.redirect_uris if not logic.redirect_uri_is_acceptable(uri)]
    if bad_uris:
        raise Problem(400, "invalid-redirect-uri", "redirect URIs must be https (or loopback)")
    unknown = logic.unknown_scopes(body.scopes)
    if unknown:
        raise Problem(400, "invalid-scope", f"unknown scope(s): {' '.join(unknown)}")
    if body.kind == "public" and not body.redirect_uris:
        raise Problem(400, "invalid-client", "a public client needs a redirect URI")
    if body.kind == "confidential" and not body.redirect_uris:
        grants: tuple[str, ...] = (GRANT_CLIENT,)
        machine = scopes_of_role(Role.CLIENT_MACHINE)
        outside = [s for s in body.scopes if s not in machine]
        if outside:
            raise Problem(
                400,
                "invalid-scope",
                f"a machine client may hold only {' '.join(sorted(machine))}",
            )
    elif body.kind == "confidential":
        grants = (GRANT_CODE, GRANT_REFRESH, GRANT_CLIENT)
    else:
        grants = (GRANT_CODE, GRANT_REFRESH)
    if body.client_id == "hygie-web":
        raise Problem(409, "client-taken", "'hygie-web' is the built-in web client")
    secret = secrets.token_urlsafe(32) if body.kind == "confidential" else None
    client = OAuthClient(
        client_id=body.client_id,
        name=body.name.strip(),
        kind=body.kind,
        redirect_uris=body.redirect_uris,
        grant_types=grants,
        scopes=tuple(sorted(set(body.scopes))),
        default_scopes=("openid",) if body.redirect_uris else tuple(sorted(set(body.scopes))),
        secret_hash=accounts.hasher.hash(secret) if secret else None,
    )
    with accounts.store.write() as db:
        if repo.get_client(db, body.client_id) is not None:
            raise Problem(409, "client-taken", f"the client id '{body.client_id}' is taken")
        saved = repo.save_client(db, client, actor=actor.actor, expected_version=0)
    accounts.audit.record(
        actor.event("client_create", "oauth_client", client.client_id, purpose="admin")
    )
    return saved, secret


# --- controllers ------------------------------------------------------------------------------


class UserAdminController(Controller):
    """Accounts of the pharmacy's staff and technical administrators."""

    path = "/api/identity/users"
    tags = ["identity"]
    dependencies = IDENTITY_DEPENDENCIES

    @get("/", guards=[requires("admin:users")], sync_to_thread=True)
    def list_users(
        self,
        accounts: NamedDependency[Accounts],
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=1_000_000)] = 0,
    ) -> list[UserView]:
        """Every account, latest version of each (secrets are never part of a user)."""
        items = repo.list_users(accounts.store.db, limit=limit, offset=offset)
        return [user_view(item, accounts) for item in items]

    @post("/", guards=[requires("admin:users")], sync_to_thread=True)
    def create_user(
        self,
        data: JSONBody[UserCreate],
        accounts: NamedDependency[Accounts],
        actor: NamedDependency[Actor],
    ) -> UserView:
        """Create an account (clinical roles need ``staff:manage``; the password must follow
        the policy; 409 if the login or RPPS number is taken)."""
        return user_view(accounts.create(data, actor), accounts)

    @get("/{user_id:str}", guards=[requires("admin:users")], sync_to_thread=True)
    def get_user(self, user_id: UserIdParam, accounts: NamedDependency[Accounts]) -> UserView:
        return user_view(accounts.get(user_id), accounts)

    @put("/{user_id:str}", guards=[requires("admin:users")], sync_to_thread=True)
    def update_user(
        self,
        user_id: UserIdParam,
        data: JSONBody[UserUpdate],
        accounts: NamedDependency[Accounts],
        actor: NamedDependency[Actor],
    ) -> UserView:
        """Change name, role, RPPS or status (a new version; a role or status change revokes
        the user's sessions at once)."""
        return user_view(accounts.update(user_id, data, actor), accounts)

    @get("/{user_id:str}/history", guards=[requires("admin:users")], sync_to_thread=True)
    def user_history(
        self, user_id: UserIdParam, accounts: NamedDependency[Accounts]
    ) -> list[UserView]:
        """Every version, oldest first, with who wrote it and when."""
        accounts.get(user_id)
        return [user_view(item) for item in repo.user_history(accounts.store.db, user_id)]

    @post(
        "/{user_id:str}/password",
        guards=[requires("admin:users")],
        sync_to_thread=True,
        status_code=204,
    )
    def reset_password(
        self,
        user_id: UserIdParam,
        data: JSONBody[PasswordReset],
        accounts: NamedDependency[Accounts],
        actor: NamedDependency[Actor],
    ) -> None:
        """Set a new password (the user's sessions and quick-switch PIN logins end)."""
        accounts.reset_password(user_id, data.password, actor)

    @post(
        "/{user_id:str}/unlock",
        guards=[requires("admin:users")],
        sync_to_thread=True,
        status_code=204,
    )
    def unlock_user(
        self,
        user_id: UserIdParam,
        accounts: NamedDependency[Accounts],
        actor: NamedDependency[Actor],
    ) -> None:
        """Clear the failed-login counter of an account (not of a client address)."""
        accounts.unlock(user_id, actor)

    @post(
        "/{user_id:str}/revoke-sessions",
        guards=[requires("admin:tokens")],
        sync_to_thread=True,
        status_code=200,
    )
    def revoke_sessions(
        self,
        user_id: UserIdParam,
        accounts: NamedDependency[Accounts],
        actor: NamedDependency[Actor],
    ) -> Revoked:
        """End every session of a user now: refresh tokens and access tokens."""
        return Revoked(families=accounts.revoke_sessions(user_id, actor))


class ClientAdminController(Controller):
    """OAuth clients: integrations (client credentials) and other user interfaces."""

    path = "/api/identity/clients"
    tags = ["identity"]
    dependencies = IDENTITY_DEPENDENCIES

    @get("/", guards=[requires("admin:clients")], sync_to_thread=True)
    def list_clients(self, accounts: NamedDependency[Accounts]) -> list[ClientView]:
        return [client_view(item) for item in repo.list_clients(accounts.store.db)]

    @post("/", guards=[requires("admin:clients")], sync_to_thread=True)
    def create_client(
        self,
        data: JSONBody[ClientCreate],
        accounts: NamedDependency[Accounts],
        actor: NamedDependency[Actor],
    ) -> ClientView:
        """Register a client; the answer holds the secret of a confidential client, once."""
        saved, secret = create_client(accounts, data, actor)
        return client_view(saved, secret)


class SelfController(Controller):
    """What every member of staff may do with their own account."""

    path = "/api/identity"
    tags = ["identity"]
    dependencies = IDENTITY_DEPENDENCIES

    @get("/me", guards=[requires("account:self")], sync_to_thread=True)
    def me(self, accounts: NamedDependency[Accounts], actor: NamedDependency[Actor]) -> UserView:
        return user_view(accounts.get(actor.actor), accounts)

    @put("/me/password", guards=[requires("account:self")], sync_to_thread=True, status_code=204)
    def change_password(
        self,
        data: JSONBody[PasswordChange],
        accounts: NamedDependency[Accounts],
        actor: NamedDependency[Actor],
    ) -> None:
        """Change one's password; the other sessions of the account end."""
        accounts.change_password(actor.actor, data.current_password, data.new_password, actor)

    @put("/me/pin", guards=[requires("account:self")], sync_to_thread=True, status_code=204)
    def set_pin(
        self,
        data: JSONBody[PinChange],
        accounts: NamedDependency[Accounts],
        actor: NamedDependency[Actor],
    ) -> None:
        """Set the PIN for the quick user switch at a counter (4 to 8 digits)."""
        accounts.set_pin(actor.actor, data.current_password, data.pin, actor)

    @post("/me/logout", guards=[requires("account:self")], sync_to_thread=True, status_code=200)
    def logout_everywhere(
        self, accounts: NamedDependency[Accounts], actor: NamedDependency[Actor]
    ) -> Revoked:
        """End every session of the caller, on every terminal."""
        return Revoked(families=accounts.revoke_sessions(actor.actor, actor))

    @get("/roles", guards=[requires("account:self")], sync_to_thread=False)
    def roles(self) -> list[RoleView]:
        """The role → scope table the server enforces."""
        return role_views()

    @get("/scopes", guards=[requires("account:self")], sync_to_thread=False)
    def scopes(self) -> dict[str, str]:
        """Every scope and what it allows."""
        return dict(SCOPES)
