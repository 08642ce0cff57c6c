"""Sign-in of the counter UI: the OAuth 2.0 authorization code flow with PKCE.

The UI is the identity service's built-in public client ``hygie-web``. ``/ui/login`` sends
the browser to ``/oauth/authorize`` (the identity service's French login page, which also
offers the PIN quick switch to the users who signed in on this terminal today);
``/ui/callback`` checks ``state`` against the browser's login cookie, exchanges the code with
the PKCE verifier at ``/oauth/token`` and opens a web session. Logout revokes the refresh
token (the whole login family) and forgets the session.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import Parameter, QueryParameter

from appliance.security import requires
from appliance.web.backend import Api, call_app, client_address
from appliance.web.core import (
    UI,
    current_session,
    form_data,
    issuer,
    redirect,
    render,
    safe_next,
    secure_cookies,
    session_cookie,
    session_store,
)
from appliance.web.sessions import LOGIN_COOKIE, PENDING_TTL_S, SESSION_COOKIE
from services.identity.logic import pkce_challenge
from services.identity.roles import ROLES, Role

WEB_CLIENT_ID = "hygie-web"
OPEN = {"exclude_from_auth": True, "public": True}
"""``opt`` of the pages anyone may open (login, callback): no session needed."""

StateQuery = Annotated[str | None, QueryParameter(name="state", required=False, max_length=200)]
Text = Annotated[str | None, Parameter(required=False, max_length=2000)]

REASONS = {
    "expired": "Votre session a expiré. Reconnectez-vous pour revenir à la page demandée.",
    "login": "Connectez-vous pour accéder à Hygie.",
    "logout": "Vous êtes déconnecté(e).",
    "switch": (
        "Session fermée : l'utilisateur suivant peut se connecter (code PIN ou mot de passe)."
    ),
    "failed": "La connexion n'a pas abouti. Recommencez.",
}


def callback_uri(app: Any) -> str:
    return issuer(app) + UI + "/callback"


def _login_cookie(app: Any, value: str, max_age: int) -> Cookie:
    return Cookie(
        key=LOGIN_COOKIE,
        value=value,
        path=UI,
        httponly=True,
        secure=secure_cookies(app),
        samesite="lax",
        max_age=max_age,
    )


@get(UI + "/login", opt=OPEN, sync_to_thread=False, include_in_schema=False)
def login_page(request: Request[Any, Any, Any], reason: Text = None, next: Text = None) -> Any:
    """With a reason (expired session, logout, switch): a page saying so and a button;
    without one: straight to the identity service's login page."""
    target = safe_next(next)
    own = urlsplit(issuer(request.app)).netloc
    if request.headers.get("host") and request.headers.get("host") != own:
        # the login comes back to the issuer's host: start there, so the cookies match
        query = urlencode({k: v for k, v in (("reason", reason), ("next", target)) if v})
        return redirect(f"{issuer(request.app)}{UI}/login?{query}")
    if reason in REASONS and reason != "login":  # a first visit goes straight to the login
        return render(
            request, "login.html", message=REASONS[reason], next_path=target, reason=reason
        )
    return _start(request, target)


@get(UI + "/login/start", opt=OPEN, sync_to_thread=False, include_in_schema=False)
def login_start(request: Request[Any, Any, Any], next: Text = None) -> Response[str]:
    """Begin an authorization request (PKCE S256) and leave for the login page."""
    return _start(request, safe_next(next))


def _start(request: Request[Any, Any, Any], target: str) -> Response[str]:
    verifier = secrets.token_urlsafe(48)
    pending = session_store(request.app).begin_login(verifier, target)
    params = {
        "response_type": "code",
        "client_id": WEB_CLIENT_ID,
        "redirect_uri": callback_uri(request.app),
        "state": pending.state,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    response = redirect("/oauth/authorize?" + urlencode(params))
    response.set_cookie(_login_cookie(request.app, pending.state, int(PENDING_TTL_S)))
    return response


@get(UI + "/callback", opt=OPEN, include_in_schema=False)
async def callback(
    request: Request[Any, Any, Any],
    code: Text = None,
    state_param: Annotated[
        str | None, Parameter(query="state", required=False, max_length=200)
    ] = None,
    error: Text = None,
) -> Response[str]:
    """Return from the login page: exchange the code, open the session, go where asked."""
    store = session_store(request.app)
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    pending = store.take_login(state_param) if state_param else None
    if error or not code or pending is None or not secrets.compare_digest(cookie, pending.state):
        return redirect(f"{UI}/login?reason=failed")
    response = await call_app(
        request.app,
        "POST",
        "/oauth/token",
        client_addr=client_address(request),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": callback_uri(request.app),
            "code_verifier": pending.verifier,
            "client_id": WEB_CLIENT_ID,
        },
    )
    if response.status_code != 200:
        return redirect(f"{UI}/login?reason=failed")
    session = store.create(response.json())
    me = await Api(request, session.access_token).optional("/api/identity/me")
    if isinstance(me, dict):
        session.user_id = str(me.get("user_id", ""))
        session.username = str(me.get("username", ""))
        session.display_name = str(me.get("display_name") or me.get("username") or "")
        session.role = str(me.get("role", ""))
        spec = ROLES.get(Role(session.role)) if session.role in set(Role) else None
        session.role_label = spec.label if spec else session.role
    result = redirect(pending.next_path)
    result.set_cookie(session_cookie(request.app, session.session_id))
    result.set_cookie(_login_cookie(request.app, "", 0))
    return result


async def _end_session(request: Request[Any, Any, Any]) -> None:
    session = current_session(request)
    if session.refresh_token:
        await call_app(
            request.app,
            "POST",
            "/oauth/revoke",
            client_addr=client_address(request),
            data={
                "token": session.refresh_token,
                "token_type_hint": "refresh_token",
                "client_id": WEB_CLIENT_ID,
            },
        )
    session_store(request.app).drop(session.session_id)


def _ended(reason: str, request: Request[Any, Any, Any]) -> Response[str]:
    response = redirect(f"{UI}/login?reason={reason}", request)
    response.delete_cookie(SESSION_COOKIE, path=UI)
    return response


@post(UI + "/logout", guards=[requires("account:self")], include_in_schema=False)
async def logout(request: Request[Any, Any, Any]) -> Response[str]:
    """End this session: refresh token revoked (its whole family), session forgotten."""
    await form_data(request)
    await _end_session(request)
    return _ended("logout", request)


@post(UI + "/switch", guards=[requires("account:self")], include_in_schema=False)
async def switch_user(request: Request[Any, Any, Any]) -> Response[str]:
    """Quick user switch: close this session, then the login page with its PIN buttons."""
    await form_data(request)
    await _end_session(request)
    response = redirect(f"{UI}/login/start", request)
    response.delete_cookie(SESSION_COOKIE, path=UI)
    return response


AUTH_HANDLERS = [login_page, login_start, callback, logout, switch_user]
