"""The OAuth 2.0 authorization server and OpenID Connect provider of the appliance.

Flows: authorization code with PKCE (S256, mandatory for every client) for the web UI,
client credentials for integrations, refresh-token rotation with reuse detection, RFC 7009
revocation. Access tokens are short-lived JWTs (:class:`~appliance.security.TokenService`);
refresh tokens and codes are random strings of which only a SHA-256 is stored.

Refresh tokens of one login form a *family*. Each refresh consumes the token and issues the
next one; presenting a consumed token again means it was copied, so the whole family is
revoked, including the access tokens it produced (listed in the denylist by ``jti``).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlencode

import msgspec
import sqlite_utils

from appliance.audit import AuditLog
from appliance.audit.models import CODE_PATTERN
from appliance.config import Settings
from appliance.security import InvalidTokenError, Principal, TokenService
from appliance.security.revocation import revoke_token
from appliance.security.tokens import ALGORITHM
from appliance.store import Store
from services.identity import logic
from services.identity import store as repo
from services.identity.accounts import Accounts, Actor, revoke_family_tokens
from services.identity.models import User
from services.identity.roles import SCOPES, Role, role_scopes

WEB_CLIENT_ID = "hygie-web"
WEB_CLIENT_NAME = "Hygie (interface web)"
WEB_REDIRECT_PATHS = ("/ui/callback",)
GRANT_CODE = "authorization_code"
GRANT_REFRESH = "refresh_token"
GRANT_CLIENT = "client_credentials"
SUPPORTED_GRANTS = (GRANT_CODE, GRANT_REFRESH, GRANT_CLIENT)
MAX_PARAM = 2048


class ClientInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A client as the server uses it (the built-in web client or a stored one)."""

    client_id: str
    name: str
    kind: str
    redirect_uris: tuple[str, ...]
    grant_types: frozenset[str]
    allowed: frozenset[str] | None
    """Scopes the client may obtain; None: whatever the user's role grants."""
    default: frozenset[str] | None
    """Scopes when the request names none; None: everything the user's role grants."""
    secret_hash: str | None = None


class OAuthError(Exception):
    """An RFC 6749 error answer of the token or revocation endpoint."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="hygie"'
        return headers


class AuthorizeError(Exception):
    """A bad authorization request: shown to the user when the client or redirect URI is
    unknown (never redirect there), else sent back to the client's redirect URI."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        redirect_uri: str | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state


class TokenForm(msgspec.Struct, frozen=True, kw_only=True):
    """Parameters of a token request (``application/x-www-form-urlencoded``)."""

    grant_type: str | None = None
    code: str | None = None
    redirect_uri: str | None = None
    code_verifier: str | None = None
    refresh_token: str | None = None
    scope: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


class RevocationForm(msgspec.Struct, frozen=True, kw_only=True):
    token: str | None = None
    token_type_hint: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


def _too_long(*values: str | None) -> bool:
    return any(value is not None and len(value) > MAX_PARAM for value in values)


class AuthorizationServer:
    """Issues, rotates and revokes tokens; the HTTP layer only translates."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        audit: AuditLog,
        tokens: TokenService,
        accounts: Accounts,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.tokens = tokens
        self.accounts = accounts
        self.clock = clock
        self.issuer = settings.issuer_url

    # --- clients ------------------------------------------------------------------------------

    def web_client(self) -> ClientInfo:
        extra = tuple(u.strip() for u in self.settings.web_client_redirect_uris.split(",") if u)
        return ClientInfo(
            client_id=WEB_CLIENT_ID,
            name=WEB_CLIENT_NAME,
            kind="public",
            redirect_uris=tuple(self.issuer + path for path in WEB_REDIRECT_PATHS) + extra,
            grant_types=frozenset({GRANT_CODE, GRANT_REFRESH}),
            allowed=None,
            default=None,
        )

    def client(self, client_id: str | None) -> ClientInfo | None:
        if not client_id or len(client_id) > 64:
            return None
        if client_id == WEB_CLIENT_ID:
            return self.web_client()
        item = repo.get_client(self.store.db, client_id)
        if item is None or item.deleted or item.entity.status != "active":
            return None
        entity = item.entity
        return ClientInfo(
            client_id=entity.client_id,
            name=entity.name,
            kind=entity.kind,
            redirect_uris=entity.redirect_uris,
            grant_types=frozenset(entity.grant_types),
            allowed=frozenset(entity.scopes),
            default=frozenset(entity.default_scopes),
            secret_hash=entity.secret_hash,
        )

    def authenticate_client(
        self, client_id: str | None, client_secret: str | None, authorization: str | None
    ) -> ClientInfo:
        """The calling client, from HTTP Basic or form credentials (RFC 6749 §2.3)."""
        if authorization:
            scheme, _, encoded = authorization.partition(" ")
            if scheme.lower() != "basic":
                raise OAuthError("invalid_client", "unsupported client authentication", status=401)
            if client_secret is not None:
                raise OAuthError("invalid_request", "use one client authentication method")
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise OAuthError(
                    "invalid_client", "malformed Basic credentials", status=401
                ) from exc
            basic_id, sep, basic_secret = decoded.partition(":")
            if not sep:
                raise OAuthError("invalid_client", "malformed Basic credentials", status=401)
            basic_id, basic_secret = unquote(basic_id), unquote(basic_secret)
            if client_id is not None and client_id != basic_id:
                raise OAuthError("invalid_request", "client_id differs from the credentials")
            client_id, client_secret = basic_id, basic_secret
        if _too_long(client_id, client_secret):
            raise OAuthError("invalid_client", "unknown client or wrong secret", status=401)
        client = self.client(client_id)
        hasher = self.accounts.hasher
        if client is None:
            hasher.verify(None, client_secret or "")  # same work as a wrong secret
            raise OAuthError("invalid_client", "unknown client or wrong secret", status=401)
        if client.kind == "confidential":
            if not client_secret or not hasher.verify(client.secret_hash, client_secret):
                raise OAuthError("invalid_client", "unknown client or wrong secret", status=401)
        elif client_secret:
            raise OAuthError("invalid_client", "a public client has no secret", status=401)
        return client

    # --- authorization endpoint ---------------------------------------------------------------

    def validate_authorization(self, params: Mapping[str, str | None]) -> AuthRequest:
        """Check an authorization request; :class:`AuthorizeError` says how to refuse it."""
        if _too_long(*params.values()):
            raise AuthorizeError("invalid_request", "a parameter is too long")
        client = self.client(params.get("client_id"))
        if client is None or GRANT_CODE not in client.grant_types:
            raise AuthorizeError("invalid_client", "unknown client_id")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None and len(client.redirect_uris) == 1:
            redirect_uri = client.redirect_uris[0]
        if redirect_uri is None or not logic.redirect_uri_allowed(
            client.redirect_uris, redirect_uri
        ):
            raise AuthorizeError("invalid_request", "redirect_uri is not registered")
        state = params.get("state")

        def refuse(error: str, description: str) -> AuthorizeError:
            return AuthorizeError(error, description, redirect_uri=redirect_uri, state=state)

        if params.get("response_type") != "code":
            raise refuse("unsupported_response_type", "only response_type=code is supported")
        challenge = params.get("code_challenge")
        if not challenge or not logic.challenge_is_valid(challenge):
            raise refuse("invalid_request", "PKCE is required: code_challenge (S256)")
        if params.get("code_challenge_method") != "S256":
            raise refuse("invalid_request", "code_challenge_method must be S256")
        requested = logic.parse_scope(params.get("scope"))
        if requested is not None:
            unknown = logic.unknown_scopes(requested)
            if unknown:
                raise refuse("invalid_scope", f"unknown scope(s): {' '.join(unknown)}")
        if params.get("prompt") == "none":
            raise refuse("login_required", "the user must log in on this terminal")
        return repo.AuthRequest(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scope=params.get("scope"),
            state=state,
            code_challenge=challenge,
            nonce=params.get("nonce"),
            created_at=self.clock(),
        )

    def begin(self, request: repo.AuthRequest, device_hash: str) -> str:
        request_id = secrets.token_urlsafe(24)
        with self.store.write() as db:
            repo.put_auth_request(
                db,
                request_id,
                device_hash,
                request,
                self.clock() + self.settings.login_request_ttl_s,
            )
        return request_id

    def pending(self, request_id: str | None, device_hash: str) -> repo.AuthRequest | None:
        """The waiting request, if it exists, is fresh and was started on this browser."""
        if not request_id or len(request_id) > 64:
            return None
        found = repo.get_auth_request(self.store.db, request_id, self.clock())
        if found is None or not secrets.compare_digest(found[0], device_hash):
            return None
        return found[1]

    def error_redirect(self, request: repo.AuthRequest, error: str, description: str) -> str:
        return self.redirect_with(
            request.redirect_uri,
            {"error": error, "error_description": description, "state": request.state},
        )

    def redirect_with(self, uri: str, params: Mapping[str, str | None]) -> str:
        query = urlencode(
            {**{k: v for k, v in params.items() if v is not None}, "iss": self.issuer}
        )
        return f"{uri}{'&' if '?' in uri else '?'}{query}"

    def complete(
        self,
        request_id: str,
        request: repo.AuthRequest,
        user: User,
        amr: tuple[str, ...],
        device_hash: str,
    ) -> str:
        """The user proved who they are: issue a code, return where to send the browser."""
        client = self.client(request.client_id)
        if client is None:
            raise AuthorizeError("invalid_client", "the client was removed meanwhile")
        scopes = logic.grant_scopes(
            logic.parse_scope(request.scope),
            holder=role_scopes(user.role),
            client_allowed=client.allowed,
            client_default=client.default if client.default is not None else role_scopes(user.role),
        )
        code = secrets.token_urlsafe(32)
        now = self.clock()
        grant = repo.CodeGrant(
            client_id=client.client_id,
            redirect_uri=request.redirect_uri,
            user_id=user.user_id,
            scopes=tuple(sorted(scopes)),
            code_challenge=request.code_challenge,
            nonce=request.nonce,
            auth_time=int(now),
            amr=amr,
        )
        with self.store.write() as db:
            repo.delete_auth_request(db, request_id)
            repo.put_code(db, repo.digest(code), grant, now + self.settings.auth_code_ttl_s)
            if "pin" not in amr:
                repo.record_terminal_login(db, device_hash, user.user_id, now)
        return self.redirect_with(request.redirect_uri, {"code": code, "state": request.state})

    # --- token endpoint -----------------------------------------------------------------------

    @contextmanager
    def _committing(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction that keeps its changes when an :class:`OAuthError` ends it:
        a refused request may have to revoke what it uncovered (a replayed code or token)."""
        error: OAuthError | None = None
        with self.store.write() as db:
            try:
                yield db
            except OAuthError as exc:
                error = exc
        if error is not None:
            raise error

    def token(self, form: TokenForm, authorization: str | None, actor: Actor) -> dict[str, Any]:
        if _too_long(
            form.grant_type, form.code, form.redirect_uri, form.code_verifier, form.scope
        ) or _too_long(form.refresh_token):
            raise OAuthError("invalid_request", "a parameter is too long")
        if not form.grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if form.grant_type not in SUPPORTED_GRANTS:
            raise OAuthError("unsupported_grant_type", f"grant_type '{form.grant_type}'")
        client = self.authenticate_client(form.client_id, form.client_secret, authorization)
        if form.grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", "this client may not use this grant type")
        if form.grant_type == GRANT_CODE:
            return self._code_grant(form, client, actor)
        if form.grant_type == GRANT_REFRESH:
            return self._refresh_grant(form, client, actor)
        return self._client_credentials(form, client, actor)

    def _code_grant(self, form: TokenForm, client: ClientInfo, actor: Actor) -> dict[str, Any]:
        if not form.code or not form.redirect_uri:
            raise OAuthError("invalid_request", "code and redirect_uri are required")
        now = self.clock()
        code_hash = repo.digest(form.code)
        with self._committing() as db:
            found = repo.get_code(db, code_hash)
            if found is None:
                raise OAuthError("invalid_grant", "unknown or expired code")
            grant, expires_at, used_at, family_id = found
            if used_at is not None:
                if family_id is not None:
                    revoke_family_tokens(db, family_id, now, "code_replayed")
                    self.audit.record(
                        actor.event(
                            "token_reuse",
                            "token_family",
                            family_id,
                            purpose="authentication",
                            outcome="family_revoked",
                        )
                    )
                raise OAuthError("invalid_grant", "the code was already used")
            if expires_at <= now or grant.client_id != client.client_id:
                raise OAuthError("invalid_grant", "unknown or expired code")
            if not secrets.compare_digest(grant.redirect_uri, form.redirect_uri):
                raise OAuthError("invalid_grant", "redirect_uri does not match")
            if not logic.verify_pkce(form.code_verifier, grant.code_challenge, "S256"):
                raise OAuthError("invalid_grant", "PKCE verification failed")
            user = repo.get_user(db, grant.user_id)
            if user is None or user.entity.status != "active":
                repo.mark_code_used(db, code_hash, now, None)
                raise OAuthError("invalid_grant", "the account is not active")
            entity = user.entity
            family_id = f"f-{secrets.token_hex(12)}"
            repo.mark_code_used(db, code_hash, now, family_id)
            family = repo.Family(
                family_id=family_id,
                subject=entity.user_id,
                client_id=client.client_id,
                data=repo.FamilyData(
                    scopes=grant.scopes,
                    role=entity.role.value,
                    auth_time=grant.auth_time,
                    amr=grant.amr,
                ),
                created_at=now,
                expires_at=now + self.settings.refresh_token_max_ttl_s,
                revoked_at=None,
                revoked_reason=None,
            )
            repo.create_family(db, family)
            response = self._issue(db, family, entity, client, now, nonce=grant.nonce)
        self.audit.record(
            actor.event(
                "token_issue",
                "token_family",
                family_id,
                purpose="authentication",
                actor=entity.user_id,
                role=entity.role.value,
            )
        )
        return response

    def _issue(
        self,
        db: Any,
        family: repo.Family,
        user: User,
        client: ClientInfo,
        now: float,
        *,
        nonce: str | None = None,
        id_token: bool = True,
    ) -> dict[str, Any]:
        """Access token (recorded under the family), rotated refresh token, ID token."""
        scopes = family.data.scopes
        ttl = self.settings.access_token_ttl_s
        access = self.tokens.mint(
            subject=user.user_id,
            role=user.role.value,
            scopes=scopes,
            ttl_s=ttl,
            client_id=client.client_id,
            now=now,
            extra={"amr": list(family.data.amr), "auth_time": family.data.auth_time},
        )
        repo.record_access_token(db, access.jti, family.family_id, access.expires_at)
        response: dict[str, Any] = {
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": " ".join(scopes),
        }
        if GRANT_REFRESH in client.grant_types:
            refresh = secrets.token_urlsafe(32)
            expires_at = min(now + self.settings.refresh_token_idle_ttl_s, family.expires_at)
            repo.put_refresh_token(db, repo.digest(refresh), family.family_id, now, expires_at)
            response["refresh_token"] = refresh
            response["refresh_expires_in"] = int(expires_at - now)
        if id_token and "openid" in scopes:
            response["id_token"] = self.tokens.sign_id_token(
                subject=user.user_id,
                audience=client.client_id,
                ttl_s=ttl,
                claims=self._id_claims(user, family, scopes, nonce),
                now=now,
            )
        return response

    def _id_claims(
        self, user: User, family: repo.Family, scopes: tuple[str, ...], nonce: str | None
    ) -> dict[str, Any]:
        claims: dict[str, Any] = {"auth_time": family.data.auth_time, "amr": list(family.data.amr)}
        if nonce:
            claims["nonce"] = nonce
        if "profile" in scopes:
            claims.update(self.profile_claims(user))
        return claims

    @staticmethod
    def profile_claims(user: User) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "name": user.display_name,
            "preferred_username": user.username,
            "hygie_role": user.role.value,
        }
        if user.rpps:
            claims["rpps"] = user.rpps
        return claims

    def _refresh_grant(self, form: TokenForm, client: ClientInfo, actor: Actor) -> dict[str, Any]:
        if not form.refresh_token:
            raise OAuthError("invalid_request", "refresh_token is required")
        now = self.clock()
        token_hash = repo.digest(form.refresh_token)
        with self._committing() as db:
            row = repo.get_refresh_token(db, token_hash)
            family = repo.get_family(db, row.family_id) if row else None
            if row is None or family is None or family.client_id != client.client_id:
                raise OAuthError("invalid_grant", "unknown refresh token")
            if family.revoked_at is not None:
                raise OAuthError("invalid_grant", "the session was revoked")
            if not repo.mark_refresh_used(db, token_hash, now):
                revoke_family_tokens(db, family.family_id, now, "refresh_token_reused")
                self.audit.record(
                    actor.event(
                        "token_reuse",
                        "token_family",
                        family.family_id,
                        purpose="authentication",
                        outcome="family_revoked",
                        actor=family.subject,
                        role=family.data.role,
                    )
                )
                raise OAuthError(
                    "invalid_grant", "refresh token reused: the whole session is revoked"
                )
            if row.expires_at <= now or family.expires_at <= now:
                raise OAuthError("invalid_grant", "the refresh token expired")
            user = repo.get_user(db, family.subject)
            if (
                user is None
                or user.entity.status != "active"
                or user.entity.role.value != family.data.role
            ):
                revoke_family_tokens(db, family.family_id, now, "account_changed")
                raise OAuthError("invalid_grant", "the account changed: log in again")
            narrowed = logic.parse_scope(form.scope)
            if narrowed is not None:
                if not narrowed <= set(family.data.scopes):
                    raise OAuthError("invalid_scope", "a refresh cannot widen the scope")
                family = msgspec.structs.replace(
                    family,
                    data=msgspec.structs.replace(family.data, scopes=tuple(sorted(narrowed))),
                )
            response = self._issue(db, family, user.entity, client, now, id_token=False)
        self.audit.record(
            actor.event(
                "token_refresh",
                "token_family",
                family.family_id,
                purpose="authentication",
                actor=family.subject,
                role=family.data.role,
            )
        )
        return response

    def _client_credentials(
        self, form: TokenForm, client: ClientInfo, actor: Actor
    ) -> dict[str, Any]:
        if client.kind != "confidential":
            raise OAuthError("unauthorized_client", "client credentials need a confidential client")
        holder = role_scopes(Role.CLIENT_MACHINE) & (client.allowed or frozenset())
        requested = logic.parse_scope(form.scope)
        if requested is not None and logic.unknown_scopes(requested):
            raise OAuthError("invalid_scope", "unknown scope")
        scopes = logic.grant_scopes(
            requested, holder=holder, client_allowed=client.allowed, client_default=holder
        )
        if requested is not None and not scopes:
            raise OAuthError("invalid_scope", "none of the requested scopes is allowed")
        ttl = self.settings.access_token_ttl_s
        access = self.tokens.mint(
            subject=client.client_id,
            role=Role.CLIENT_MACHINE.value,
            scopes=scopes,
            ttl_s=ttl,
            client_id=client.client_id,
            now=self.clock(),
        )
        self.audit.record(
            actor.event(
                "token_issue",
                "oauth_client",
                client.client_id,
                purpose="authentication",
                actor=client.client_id,
                role=Role.CLIENT_MACHINE.value,
            )
        )
        return {
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": " ".join(sorted(scopes)),
        }

    # --- revocation (RFC 7009) ----------------------------------------------------------------

    def revoke(self, form: RevocationForm, authorization: str | None, actor: Actor) -> None:
        client = self.authenticate_client(form.client_id, form.client_secret, authorization)
        if not form.token:
            raise OAuthError("invalid_request", "token is required")
        if len(form.token) > 8192:
            return
        now = self.clock()
        with self.store.write() as db:
            row = repo.get_refresh_token(db, repo.digest(form.token))
            if row is not None:
                family = repo.get_family(db, row.family_id)
                if family is None or family.client_id != client.client_id:
                    return
                revoke_family_tokens(db, family.family_id, now, "revoked")
                subject, role, object_type, object_id = (
                    family.subject,
                    family.data.role,
                    "token_family",
                    family.family_id,
                )
            else:
                try:
                    _header, claims = self.tokens.decode_claims(
                        form.token, audience="hygie-api", now=now
                    )
                except InvalidTokenError:
                    return  # unknown, expired or not ours: nothing to revoke (RFC 7009 §2.2)
                if claims.get("client_id") != client.client_id or not claims.get("jti"):
                    return
                revoke_token(db, str(claims["jti"]), int(claims["exp"]))
                subject, role = str(claims["sub"]), str(claims.get("role", "none"))
                object_type, object_id = "access_token", str(claims["jti"])[:64]
        self.audit.record(
            actor.event(
                "token_revoke",
                object_type,
                object_id,
                purpose="authentication",
                actor=subject if _is_code(subject) else "unknown",
                role=role if _is_code(role) else "none",
            )
        )

    # --- discovery and userinfo ---------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "jwks_uri": f"{base}/oauth/jwks",
            "userinfo_endpoint": f"{base}/oauth/userinfo",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "scopes_supported": sorted(SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": list(SUPPORTED_GRANTS),
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "amr",
                "name",
                "preferred_username",
                "rpps",
                "hygie_role",
            ],
            "authorization_response_iss_parameter_supported": True,
            "ui_locales_supported": ["fr-FR"],
        }

    def userinfo(self, principal: Principal) -> dict[str, Any]:
        user = repo.get_user(self.store.db, principal.subject)
        if user is None:
            return {"sub": principal.subject}
        claims: dict[str, Any] = {"sub": principal.subject}
        if "profile" in principal.scopes:
            claims.update(self.profile_claims(user.entity))
        return claims


AuthRequest = repo.AuthRequest


def _is_code(value: str) -> bool:
    return CODE_PATTERN.fullmatch(value) is not None
