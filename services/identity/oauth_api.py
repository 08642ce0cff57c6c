"""HTTP endpoints of the OAuth 2.0 authorization server and OpenID Connect provider.

Public by nature (they are how a client gets a token): discovery, JWKS, the authorization
endpoint with its French login page, the token and revocation endpoints, and the return from
an external provider. ``/oauth/userinfo`` needs a token with ``openid``. The token and
revocation endpoints answer errors in the RFC 6749 JSON format (``{"error": ...}``), as
OAuth clients expect; the pages answer in HTML.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.enums import MediaType, RequestEncodingType
from litestar.exceptions import ValidationException
from litestar.params import Body, Parameter, QueryParameter
from litestar.status_codes import HTTP_303_SEE_OTHER

from appliance.platform import Platform
from appliance.security import PUBLIC, Principal, requires
from appliance.security.ratelimit import AUTH_CATEGORY, RATE_LIMIT_OPT
from services.identity import store as repo
from services.identity.accounts import Accounts, Actor, LoginResult
from services.identity.api import IDENTITY_DEPENDENCIES
from services.identity.cards import (
    DEVICE_COOKIE,
    CardLoginError,
    PinCardAuthenticator,
    card_authenticator,
    terminal_id,
    valid_device,
)
from services.identity.federation import Federation, FederationError
from services.identity.oauth import (
    AuthorizationServer,
    AuthorizeError,
    OAuthError,
    RevocationForm,
    TokenForm,
)

DEVICE_COOKIE_MAX_AGE = 400 * 86_400
LOGIN_OPT = {**PUBLIC, RATE_LIMIT_OPT: AUTH_CATEGORY}
NO_AUTH: list[dict[str, list[str]]] = [{}]
"""OpenAPI ``security`` of a public operation: no bearer token needed."""
MAX_FIELD = 2048

_templates = Environment(
    loader=PackageLoader("services.identity", "templates"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)

MESSAGES = {
    "failure": "Identifiant ou mot de passe incorrect.",
    "pin_failure": "Code PIN incorrect.",
    "locked": "Trop d'essais infructueux : connexion bloquée pendant {s} s. Réessayez ensuite.",
    "suspended": "Ce compte est suspendu. Adressez-vous au pharmacien titulaire.",
    "unavailable": (
        "Le changement rapide par code PIN n'est pas disponible : "
        "connectez-vous avec votre mot de passe."
    ),
    "missing": "Saisissez votre identifiant et votre mot de passe.",
    "expired": (
        "La demande de connexion a expiré ou n'a pas été ouverte sur ce poste. "
        "Recommencez depuis l'application."
    ),
    "cps_unavailable": "La connexion par carte CPS n'est pas disponible sur ce poste.",
    "cps_unknown": "Aucun compte actif ne correspond à cette carte CPS.",
    "federation": "La connexion par {name} a échoué : {reason}.",
    "federation_unknown": "Aucun compte Hygie ne correspond à votre identité {name}.",
}


class LoginForm(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of the login page's forms (password, PIN or CPS card)."""

    request_id: str | None = None
    method: str | None = None
    username: str | None = None
    password: str | None = None
    user_id: str | None = None
    pin: str | None = None


def _fields_too_long(form: LoginForm) -> bool:
    return any(len(value) > MAX_FIELD for value in msgspec.structs.astuple(form) if value)


# --- responses --------------------------------------------------------------------------------


def _page_headers(nonce: str, form_target: str | None = None) -> dict[str, str]:
    form_action = "'self'" + (f" {form_target}" if form_target else "")
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; form-action {form_action}; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _origin(uri: str) -> str:
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"


def render(
    template: str,
    status: int,
    *,
    headers: dict[str, str] | None = None,
    cookies: list[Cookie] | None = None,
    form_target: str | None = None,
    **context: Any,
) -> Response[str]:
    nonce = secrets.token_urlsafe(16)
    html = _templates.get_template(template).render(nonce=nonce, **context)
    return Response(
        html,
        status_code=status,
        media_type=MediaType.HTML,
        headers={**_page_headers(nonce, form_target), **(headers or {})},
        cookies=cookies or [],
    )


def error_page(status: int, message: str) -> Response[str]:
    return render("error.html", status, message=message)


def redirect(url: str, cookies: list[Cookie] | None = None) -> Response[str]:
    return Response(
        "",
        status_code=HTTP_303_SEE_OTHER,
        headers={"Location": url, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        cookies=cookies or [],
        media_type=MediaType.TEXT,
    )


def oauth_json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        body,
        status_code=status,
        media_type=MediaType.JSON,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})},
    )


def oauth_error(error: OAuthError) -> Response[Any]:
    return oauth_json(error.body(), error.status, error.headers())


def _invalid_oauth_request(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return oauth_error(OAuthError("invalid_request", "malformed request parameters"))


def _invalid_page_request(_: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    return error_page(400, "Demande de connexion invalide.")


# --- the browser of a counter terminal --------------------------------------------------------


def _device(request: Request[Any, Any, Any]) -> tuple[str, list[Cookie]]:
    """This browser's id (a random value in a cookie) and the cookie that keeps it."""
    value = request.cookies.get(DEVICE_COOKIE, "")
    if not valid_device(value):
        value = secrets.token_urlsafe(32)
    # Set again each time with path "/": a cookie of an older version (path "/oauth") then
    # reaches the UI and the API too, which route card reads to the terminal's workstation.
    platform: Platform | None = request.app.state.get("platform")
    secure = bool(platform and platform.settings.issuer_url.startswith("https:"))
    cookie = Cookie(
        key=DEVICE_COOKIE,
        value=value,
        max_age=DEVICE_COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        secure=secure,
        samesite="lax",
    )
    return value, [cookie]


def _login_page(
    server: AuthorizationServer,
    accounts: Accounts,
    request_id: str,
    auth_request: repo.AuthRequest,
    device_hash: str,
    *,
    status: int = 200,
    error: str | None = None,
    username: str = "",
    cookies: list[Cookie] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    client = server.client(auth_request.client_id)
    federation = Federation(server.settings)
    return render(
        "login.html",
        status,
        headers=headers,
        cookies=cookies,
        form_target=_origin(auth_request.redirect_uri),
        client_name=client.name if client else auth_request.client_id,
        request_id=request_id,
        error=error,
        username=username,
        pin_users=accounts.pin_candidates(device_hash),
        federation=federation.name if federation.enabled else None,
        cps=card_authenticator() is not None,
        terminal=terminal_id(device_hash),
    )


Query = Annotated[str | None, Parameter(required=False, max_length=MAX_FIELD)]
StateQuery = Annotated[
    str | None, QueryParameter(name="state", required=False, max_length=MAX_FIELD)
]  # ``state`` and ``scope`` are names Litestar reserves for other things
ScopeQuery = Annotated[
    str | None, QueryParameter(name="scope", required=False, max_length=MAX_FIELD)
]


class OAuthController(Controller):
    """Discovery, keys, authorization (login page), token, revocation, userinfo."""

    path = "/"
    tags = ["oauth"]
    dependencies = IDENTITY_DEPENDENCIES
    exception_handlers = {ValidationException: _invalid_page_request}

    @get("/.well-known/openid-configuration", opt=PUBLIC, sync_to_thread=False, security=NO_AUTH)
    def discovery(self, server: NamedDependency[AuthorizationServer]) -> dict[str, Any]:
        """OpenID Connect discovery document (issuer, endpoints, supported features)."""
        return server.discovery()

    @get("/oauth/jwks", opt=PUBLIC, sync_to_thread=False, security=NO_AUTH)
    def jwks(self, server: NamedDependency[AuthorizationServer]) -> Response[dict[str, Any]]:
        """Public keys that verify access and ID tokens (``kid`` selects one)."""
        return Response(
            server.tokens.public_jwks(), headers={"Cache-Control": "public, max-age=300"}
        )

    @get("/oauth/authorize", opt=LOGIN_OPT, sync_to_thread=True, security=NO_AUTH)
    def authorize(
        self,
        request: Request[Any, Any, Any],
        server: NamedDependency[AuthorizationServer],
        accounts: NamedDependency[Accounts],
        response_type: Query = None,
        client_id: Query = None,
        redirect_uri: Query = None,
        scope_param: ScopeQuery = None,
        state_param: StateQuery = None,
        nonce: Query = None,
        code_challenge: Query = None,
        code_challenge_method: Query = None,
        prompt: Query = None,
    ) -> Response[str]:
        """Authorization endpoint: checks the request, then shows the login page (French).

        PKCE with S256 is mandatory, the redirect URI must match a registered one exactly,
        ``state`` comes back unchanged.
        """
        params = {
            "response_type": response_type,
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope_param,
            "state": state_param,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": code_challenge_method,
            "prompt": prompt,
        }
        try:
            auth_request = server.validate_authorization(params)
        except AuthorizeError as exc:
            if exc.redirect_uri is None:
                return error_page(400, f"Demande de connexion invalide : {exc.description}.")
            return redirect(
                server.redirect_with(
                    exc.redirect_uri,
                    {"error": exc.error, "error_description": exc.description, "state": exc.state},
                )
            )
        device, cookies = _device(request)
        device_hash = repo.digest(device)
        request_id = server.begin(auth_request, device_hash)
        return _login_page(server, accounts, request_id, auth_request, device_hash, cookies=cookies)

    @post("/oauth/authorize", opt=LOGIN_OPT, sync_to_thread=True, status_code=200, security=NO_AUTH)
    def login(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        server: NamedDependency[AuthorizationServer],
        accounts: NamedDependency[Accounts],
        actor: NamedDependency[Actor],
    ) -> Response[str]:
        """The login page's answer: password, quick-switch PIN or CPS card."""
        device, cookies = _device(request)
        device_hash = repo.digest(device)
        if _fields_too_long(data):
            return error_page(400, "Demande de connexion invalide.")
        auth_request = server.pending(data.request_id, device_hash)
        if auth_request is None or data.request_id is None:
            return error_page(400, MESSAGES["expired"])
        request_id = data.request_id
        method = data.method or "password"
        username = (data.username or "").strip().lower()
        if method == "password":
            if not username or not data.password:
                return _login_page(
                    server,
                    accounts,
                    request_id,
                    auth_request,
                    device_hash,
                    status=400,
                    error=MESSAGES["missing"],
                    username=username,
                    cookies=cookies,
                )
            result = accounts.login_password(username, data.password, actor)
            amr: tuple[str, ...] = ("pwd",)
        elif method == "pin":
            result = accounts.login_pin(data.user_id or "", data.pin or "", device_hash, actor)
            amr = ("pin",)
        elif method == "cps":
            authenticator = card_authenticator()
            if authenticator is None:
                return _login_page(
                    server,
                    accounts,
                    request_id,
                    auth_request,
                    device_hash,
                    status=400,
                    error=MESSAGES["cps_unavailable"],
                    cookies=cookies,
                )
            rpps: str | None
            try:
                if data.pin and isinstance(authenticator, PinCardAuthenticator):
                    rpps = authenticator.authenticate_pin(device_hash, data.pin)
                else:
                    rpps = authenticator.authenticate(device_hash)
            except CardLoginError as exc:
                return _login_page(
                    server,
                    accounts,
                    request_id,
                    auth_request,
                    device_hash,
                    status=403,
                    error=exc.message,
                    cookies=cookies,
                )
            user = repo.find_user(accounts.store.db, rpps=rpps) if rpps else None
            if user is None:
                return _login_page(
                    server,
                    accounts,
                    request_id,
                    auth_request,
                    device_hash,
                    status=403,
                    error=MESSAGES["cps_unknown"],
                    cookies=cookies,
                )
            result = accounts.login_external(user, "cps", actor)
            amr = ("cps",)
        else:
            return error_page(400, "Demande de connexion invalide.")
        return _finish(
            server,
            accounts,
            request_id,
            auth_request,
            device_hash,
            result,
            amr,
            cookies,
            username=username,
            pin=method == "pin",
        )

    @post(
        "/oauth/token",
        opt=LOGIN_OPT,
        security=NO_AUTH,
        sync_to_thread=True,
        status_code=200,
        exception_handlers={ValidationException: _invalid_oauth_request},
    )
    def token(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[TokenForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        server: NamedDependency[AuthorizationServer],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        """Token endpoint: ``authorization_code`` (with PKCE), ``refresh_token`` (rotated;
        a reused one revokes its whole family), ``client_credentials``."""
        try:
            body = server.token(data, request.headers.get("authorization"), actor)
        except OAuthError as exc:
            return oauth_error(exc)
        return oauth_json(body)

    @post(
        "/oauth/revoke",
        opt=LOGIN_OPT,
        security=NO_AUTH,
        sync_to_thread=True,
        status_code=200,
        exception_handlers={ValidationException: _invalid_oauth_request},
    )
    def revoke(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[RevocationForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        server: NamedDependency[AuthorizationServer],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        """Revocation (RFC 7009): a refresh token ends its whole family, an access token is
        denied until it expires. Unknown tokens are answered 200 as well."""
        try:
            server.revoke(data, request.headers.get("authorization"), actor)
        except OAuthError as exc:
            return oauth_error(exc)
        return oauth_json({})

    @get("/oauth/userinfo", guards=[requires("openid")], sync_to_thread=True)
    def userinfo(
        self, request: Request[Any, Any, Any], server: NamedDependency[AuthorizationServer]
    ) -> dict[str, Any]:
        """Claims about the token's subject (name, login, RPPS with ``profile``)."""
        principal = request.scope.get("auth")
        assert isinstance(principal, Principal)
        return server.userinfo(principal)

    @get("/oauth/federation/start", opt=LOGIN_OPT, sync_to_thread=True, security=NO_AUTH)
    def federation_start(
        self,
        request: Request[Any, Any, Any],
        server: NamedDependency[AuthorizationServer],
        request_id: Query = None,
    ) -> Response[str]:
        """Leave for the external provider (Pro Santé Connect or the pharmacy's own)."""
        federation = Federation(server.settings)
        if not federation.enabled:
            return error_page(404, "Aucun fournisseur d'identité externe n'est configuré.")
        device, _ = _device(request)
        auth_request = server.pending(request_id, repo.digest(device))
        if auth_request is None or request_id is None:
            return error_page(400, MESSAGES["expired"])
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        try:
            url = federation.authorization_url(state, nonce, verifier)
        except FederationError as exc:
            return error_page(
                502, MESSAGES["federation"].format(name=federation.name, reason=str(exc))
            )
        updated = msgspec.structs.replace(
            auth_request, upstream_nonce=nonce, upstream_verifier=verifier
        )
        with server.store.write() as db:
            repo.update_auth_request(db, request_id, updated, state)
        return redirect(url)

    @get("/oauth/federation/callback", opt=LOGIN_OPT, sync_to_thread=True, security=NO_AUTH)
    def federation_callback(
        self,
        request: Request[Any, Any, Any],
        server: NamedDependency[AuthorizationServer],
        accounts: NamedDependency[Accounts],
        actor: NamedDependency[Actor],
        state_param: StateQuery = None,
        code: Query = None,
        error: Query = None,
    ) -> Response[str]:
        """Return from the external provider: check it, find the account, issue our code."""
        federation = Federation(server.settings)
        if not federation.enabled or not state_param:
            return error_page(400, MESSAGES["expired"])
        found = repo.find_by_upstream_state(server.store.db, state_param, server.clock())
        device, cookies = _device(request)
        device_hash = repo.digest(device)
        if found is None or not secrets.compare_digest(found[1], device_hash):
            return error_page(400, MESSAGES["expired"])
        request_id, _, auth_request = found
        with server.store.write() as db:  # the provider's answer is usable once
            repo.update_auth_request(db, request_id, auth_request, secrets.token_urlsafe(24))
        name = federation.name
        if (
            error
            or not code
            or not auth_request.upstream_verifier
            or not auth_request.upstream_nonce
        ):
            reason = "refus ou annulation" if error else "réponse incomplète"
            return error_page(400, MESSAGES["federation"].format(name=name, reason=reason))
        try:
            claims = federation.exchange(
                code, auth_request.upstream_verifier, auth_request.upstream_nonce
            )
        except FederationError as exc:
            accounts.audit.record(
                actor.event("login", "user", "unknown", purpose="authentication", outcome="failure")
            )
            return error_page(502, MESSAGES["federation"].format(name=name, reason=str(exc)))
        user = federation.match_user(accounts.store, claims)
        if user is None:
            accounts.audit.record(
                actor.event(
                    "login", "user", "unknown", purpose="authentication", outcome="unknown_user"
                )
            )
            return error_page(403, MESSAGES["federation_unknown"].format(name=name))
        result = accounts.login_external(user, "fed", actor)
        return _finish(
            server, accounts, request_id, auth_request, device_hash, result, ("fed",), cookies
        )


def _finish(
    server: AuthorizationServer,
    accounts: Accounts,
    request_id: str,
    auth_request: repo.AuthRequest,
    device_hash: str,
    result: LoginResult,
    amr: tuple[str, ...],
    cookies: list[Cookie],
    *,
    username: str = "",
    pin: bool = False,
) -> Response[str]:
    """Send the browser back to the client with a code, or show the page again."""
    if result.outcome == "success" and result.user is not None:
        try:
            url = server.complete(request_id, auth_request, result.user, amr, device_hash)
        except AuthorizeError as exc:
            return error_page(400, f"Demande de connexion invalide : {exc.description}.")
        return redirect(url, cookies)
    status, message, headers = 400, MESSAGES["pin_failure" if pin else "failure"], {}
    if result.outcome == "locked" or (result.outcome == "failure" and result.retry_after_s):
        status = 429
        message = MESSAGES["locked"].format(s=result.retry_after_s)
        headers = {"Retry-After": str(result.retry_after_s)}
    elif result.outcome == "suspended":
        status, message = 403, MESSAGES["suspended"]
    elif result.outcome == "unavailable":
        message = MESSAGES["unavailable"]
    return _login_page(
        server,
        accounts,
        request_id,
        auth_request,
        device_hash,
        status=status,
        error=message,
        username=username,
        cookies=cookies,
        headers=headers,
    )
