"""Plumbing of the counter UI: session middleware, rendering, CSRF, error pages.

The session middleware turns the session cookie into the same :class:`Principal` the bearer
middleware makes of an API token, so every page declares its scopes with the API's own
``requires(...)`` guards. An expired or unknown session sends the browser to the login page
with a French message and the page it wanted (htmx requests get ``HX-Redirect``).
"""

from __future__ import annotations

import secrets
import threading
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from uuid import UUID

from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.enums import MediaType, ScopeType
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.middleware import ASGIMiddleware
from litestar.params import FromPath
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from appliance.observability import get_logger
from appliance.security import InvalidTokenError, Principal, scope_allows
from appliance.security.revocation import is_revoked
from appliance.web.backend import ApiError, call_app
from appliance.web.sessions import SESSION_COOKIE, SessionStore, WebSession

_log = get_logger("hygie.web")
_store_lock = threading.Lock()
REFRESH_MARGIN_S = 20.0
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UI = "/ui"
PathUUID = FromPath[UUID]
"""A UUID path parameter (Litestar's explicit style)."""

STATUS_FR = {
    400: "Demande invalide",
    401: "Connexion requise",
    403: "Accès refusé",
    404: "Introuvable",
    409: "Conflit de modification",
    413: "Fichier trop volumineux",
    422: "Données invalides",
    429: "Trop de demandes",
    503: "Service indisponible",
}


def session_store(app: Any) -> SessionStore:
    """The app's session store, created on first use (one per app instance)."""
    with _store_lock:
        store = app.state.get("web_sessions")
        if not isinstance(store, SessionStore):
            store = SessionStore()
            app.state.web_sessions = store
        return store


def issuer(app: Any) -> str:
    platform = app.state.get("platform")
    settings = platform.settings if platform is not None else app.state.settings
    return str(settings.issuer_url)


def secure_cookies(app: Any) -> bool:
    return issuer(app).startswith("https:")


def session_cookie(app: Any, value: str, *, max_age: int | None = None) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=value,
        path=UI,
        httponly=True,
        secure=secure_cookies(app),
        samesite="lax",
        max_age=max_age,
    )


def _cookie_values(scope: Scope, name: str) -> list[str]:
    """Every value sent for cookie ``name`` (a browser may hold several, by path)."""
    found = []
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    found.append(v)
    return found


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _refresh(app: Any, session: WebSession, client_addr: str) -> bool:
    """Swap the refresh token for fresh tokens (one refresh at a time per session)."""
    async with session.lock:
        store = session_store(app)
        if session.access_expires_at - REFRESH_MARGIN_S > store.now():
            return True  # another request of this session refreshed meanwhile
        if not session.refresh_token:
            return False
        response = await call_app(
            app,
            "POST",
            "/oauth/token",
            client_addr=client_addr,
            data={
                "grant_type": "refresh_token",
                "refresh_token": session.refresh_token,
                "client_id": "hygie-web",
            },
        )
        if response.status_code != 200:
            _log.info("web_session_refresh_refused", status=response.status_code)
            return False
        store.update_tokens(session, response.json())
        return True


class WebSessionMiddleware(ASGIMiddleware):
    """Session cookie → principal on ``scope['auth']``; cross-origin unsafe requests → 403."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        method = scope.get("method", "GET")
        if method in UNSAFE_METHODS and not _same_origin(scope):
            body = "Requête refusée : elle ne vient pas de cette application.".encode()
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
            end: HTTPResponseBodyEvent = {
                "type": "http.response.body",
                "body": body,
                "more_body": False,
            }
            await send(start)
            await send(end)
            return
        app = scope["app"]
        state = scope.setdefault("state", {})
        sids = _cookie_values(scope, SESSION_COOKIE)
        state["web_had_cookie"] = bool(sids)
        known = (session_store(app).get(sid) for sid in sids)
        session = next((s for s in known if s is not None), None)
        if session is not None:
            principal = await self._principal(app, session, scope)
            if principal is None:
                session_store(app).drop(session.session_id)
            else:
                scope["auth"] = principal
                scope["user"] = principal.subject
                state["web_session"] = session
        await next_app(scope, receive, send)

    async def _principal(self, app: Any, session: WebSession, scope: Scope) -> Principal | None:
        store = session_store(app)
        client = scope.get("client") or ("127.0.0.1", 0)
        if session.access_expires_at - REFRESH_MARGIN_S <= store.now() and not await _refresh(
            app, session, str(client[0])
        ):
            return None
        tokens = app.state.get("tokens")
        platform = app.state.get("platform")
        if tokens is None or platform is None:
            return None
        try:
            principal: Principal = tokens.verify(session.access_token)
        except InvalidTokenError:
            return None
        if is_revoked(platform.store, principal):
            return None
        return principal


def _same_origin(scope: Scope) -> bool:
    """A browser's unsafe request must come from a page of this host (Origin or Referer)."""
    origin = _header(scope, b"origin") or _header(scope, b"referer")
    if origin is None:
        return True  # not a browser (or a privacy setting): the CSRF token still applies
    host = _header(scope, b"host") or ""
    return urlsplit(origin).netloc == host


# --- request helpers --------------------------------------------------------------------------


def current_session(request: Request[Any, Any, Any]) -> WebSession:
    session = request.scope.get("state", {}).get("web_session")
    if not isinstance(session, WebSession):
        raise NotAuthorizedException("no web session")
    return session


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    principal = request.scope.get("auth")
    if not isinstance(principal, Principal):
        raise NotAuthorizedException("no web session")
    return principal


async def form_data(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The posted form, after checking its CSRF token (field ``csrf_token`` or header)."""
    session = current_session(request)
    form = await request.form()
    sent = request.headers.get("x-csrf-token") or str(form.get("csrf_token") or "")
    if not sent or not secrets.compare_digest(sent, session.csrf):
        raise PermissionDeniedException("csrf")
    return dict(form.multi_items()) | {k: form.getall(k) for k in form if len(form.getall(k)) > 1}


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def safe_next(path: str | None) -> str:
    """Only a path of this UI may be a login's destination (no open redirect)."""
    if not path or (not path.startswith(UI + "/") and path != UI):
        return UI + "/"
    if path.startswith("//") or "\\" in path or any(ord(c) < 32 for c in path):
        return UI + "/"
    return path[:2000]


def redirect(url: str, request: Request[Any, Any, Any] | None = None) -> Response[str]:
    """303 to ``url``, or ``HX-Redirect`` for an htmx request (which would swap a page)."""
    if request is not None and is_htmx(request):
        return Response("", status_code=200, headers={"HX-Redirect": url})
    return Response("", status_code=303, headers={"Location": url, "Cache-Control": "no-store"})


# --- rendering --------------------------------------------------------------------------------

TEMPLATES = Environment(
    loader=PackageLoader("appliance.web", "templates"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
    trim_blocks=True,
    lstrip_blocks=True,
)
STATIC_DIR = Path(__file__).parent / "static"

SEVERITY_FR = {
    "contraindication": "Contre-indication",
    "avoid": "Association déconseillée",
    "high": "Élevée",
    "precaution": "Précaution d'emploi",
    "moderate": "Modérée",
    "consider": "À prendre en compte",
    "low": "Faible",
    "info": "Information",
}
STEP_FR = {
    "adhesion": "Adhésion",
    "recueil": "Entretien de recueil",
    "analyse": "Analyse des traitements",
    "transmission": "Transmission au médecin",
    "conseil": "Entretien conseil",
    "suivi": "Entretien de suivi",
    "observance": "Suivi de l'observance",
}


def _fr_date(value: Any) -> str:
    if isinstance(value, str) and len(value) >= 10:
        try:
            value = date.fromisoformat(value[:10])
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.strftime("%d/%m/%Y %H:%M")
    if isinstance(value, date):
        return value.strftime("%d/%m/%Y")
    return "" if value is None else str(value)


TEMPLATES.filters["fr_date"] = _fr_date
TEMPLATES.globals["SEVERITY_FR"] = SEVERITY_FR
TEMPLATES.globals["STEP_FR"] = STEP_FR


def csp(app: Any) -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"form-action 'self' {issuer(app)}; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    )


def page_headers(app: Any) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp(app),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def render(
    request: Request[Any, Any, Any],
    template: str,
    *,
    status: int = 200,
    cookies: list[Cookie] | None = None,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response[str]:
    """A page (or an htmx fragment) with the user, CSRF token and helpers in context."""
    session = request.scope.get("state", {}).get("web_session")
    principal = request.scope.get("auth")
    scopes = principal.scopes if isinstance(principal, Principal) else frozenset()
    html = TEMPLATES.get_template(template).render(
        session=session if isinstance(session, WebSession) else None,
        csrf=session.csrf if isinstance(session, WebSession) else "",
        can=lambda scope: scope_allows(scopes, scope),
        path=request.url.path,
        **context,
    )
    return Response(
        html,
        status_code=status,
        media_type=MediaType.HTML,
        headers={**page_headers(request.app), **(headers or {})},
        cookies=cookies or [],
    )


def error_page(request: Request[Any, Any, Any], status: int, message: str) -> Response[str]:
    title = STATUS_FR.get(status, "Erreur")
    template = "fragments/error.html" if is_htmx(request) else "error.html"
    return render(request, template, status=status, title=title, message=message)


# --- exception handlers of the UI router ------------------------------------------------------


def login_redirect(request: Request[Any, Any, Any]) -> Response[str]:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    if request.method != "GET" or is_htmx(request):
        target = request.headers.get("hx-current-url") or UI + "/"
        target = urlsplit(target).path or UI + "/"
    reason = "expired" if request.scope.get("state", {}).get("web_had_cookie") else "login"
    url = f"{UI}/login?reason={reason}&next={quote(safe_next(target), safe='')}"
    return redirect(url, request)


def on_not_authorized(request: Request[Any, Any, Any], _: Exception) -> Response[str]:
    return login_redirect(request)


def on_forbidden(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    if str(getattr(exc, "detail", "")) == "csrf":
        message = (
            "Le formulaire a expiré ou ne vient pas de cette session. "
            "Rechargez la page puis recommencez."
        )
    else:
        message = "Votre rôle ne donne pas accès à cette page ou à cette action."
    return error_page(request, 403, message)


def on_api_error(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    assert isinstance(exc, ApiError)
    if exc.status == 401:
        return login_redirect(request)
    status = exc.status if 400 <= exc.status < 600 else 502
    message = {
        403: "Votre rôle ne donne pas accès à cette information.",
        404: "L'élément demandé n'existe pas ou plus.",
        409: "L'élément a été modifié entre-temps ou l'étape n'est pas permise maintenant : "
        + exc.detail,
        503: "Le service n'est pas disponible pour le moment : " + exc.detail,
    }.get(exc.status, f"Le serveur a refusé la demande : {exc.detail}")
    return error_page(request, status, message)


def on_http_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ValidationException):
        return error_page(request, 400, "Les paramètres de la page sont invalides.")
    status = exc.status_code
    if status >= 500:
        _log.error("web_error", status=status, detail=str(exc.detail))
        return error_page(request, 500, "Erreur interne : l'incident est consigné.")
    return error_page(request, status, str(exc.detail))


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    """A bug: logged as an error with its type and place, a French page for the counter."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else ""
    _log.error("web_unhandled_exception", error_type=type(exc).__name__, where=where)
    return error_page(request, 500, "Erreur interne : l'incident est consigné.")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    Exception: on_unexpected,
    NotAuthorizedException: on_not_authorized,
    PermissionDeniedException: on_forbidden,
    ApiError: on_api_error,
    HTTPException: on_http_exception,
}
