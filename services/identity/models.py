"""Users, OAuth clients and the shapes of the identity API (frozen: a change is a version)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from services.identity.roles import Role

Username = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9][a-z0-9._-]{1,31}$",
        description="login: 2-32 lowercase letters, digits, '.', '_' or '-'",
    ),
]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=80, pattern=r"\S")]
Rpps = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{11}$", description="11-digit RPPS number")]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Pin = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4,8}$", description="4 to 8 digits")]
Version = Annotated[int, msgspec.Meta(ge=0)]
UserId = Annotated[str, msgspec.Meta(pattern=r"^u-[0-9a-f]{16}$")]
ClientId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$")]
ClientName = Annotated[str, msgspec.Meta(min_length=1, max_length=80, pattern=r"\S")]
RedirectUri = Annotated[str, msgspec.Meta(min_length=8, max_length=512, pattern=r"^https?://\S+$")]
ScopeName = Annotated[str, msgspec.Meta(pattern=r"^[a-z]+(:[a-z*]+)?$", max_length=40)]
Status = Literal["active", "suspended"]
ClientKind = Literal["public", "confidential"]


class User(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A member of staff (or a technical administrator). Secrets live apart, never here."""

    user_id: UserId
    username: Username
    display_name: DisplayName
    role: Role
    rpps: Rpps | None = None
    status: Status = "active"


class OAuthClient(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An application allowed to ask for tokens: a web UI (public) or an integration."""

    client_id: ClientId
    name: ClientName
    kind: ClientKind
    redirect_uris: tuple[RedirectUri, ...] = ()
    grant_types: tuple[str, ...] = ()
    scopes: tuple[ScopeName, ...] = ()
    """What the client may obtain (machine clients: exactly what their tokens carry)."""
    default_scopes: tuple[ScopeName, ...] = ("openid",)
    secret_hash: str | None = None
    status: Status = "active"


# --- API shapes -------------------------------------------------------------------------------


class UserCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    username: Username
    display_name: DisplayName
    role: Role
    password: Secret
    rpps: Rpps | None = None


class UserUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A full replacement of the profile, based on ``expected_version``."""

    expected_version: Version
    display_name: DisplayName
    role: Role
    rpps: Rpps | None = None
    status: Status = "active"


class PasswordReset(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    password: Secret


class PasswordChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    current_password: Secret
    new_password: Secret


class PinChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    current_password: Secret
    pin: Pin


class UserView(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    username: str
    display_name: str
    role: str
    rpps: str | None
    status: str
    version: int
    recorded_at: datetime
    recorded_by: str
    has_pin: bool = False
    locked_for_s: int = 0


class ClientCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    client_id: ClientId
    name: ClientName
    kind: ClientKind
    redirect_uris: tuple[RedirectUri, ...] = ()
    scopes: tuple[ScopeName, ...] = ()


class ClientView(msgspec.Struct, frozen=True, kw_only=True):
    client_id: str
    name: str
    kind: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    status: str
    version: int
    client_secret: str | None = None
    """Only in the answer that creates the client: it is never shown again."""


class RoleView(msgspec.Struct, frozen=True, kw_only=True):
    role: str
    label: str
    scopes: list[str]
    rpps: str
    human: bool
    patient_data: bool


class Revoked(msgspec.Struct, frozen=True, kw_only=True):
    families: int
