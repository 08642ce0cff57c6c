"""ASGI middleware of the platform: request ids with access logs, and bearer authentication.

Rate limiting lives in :mod:`appliance.security.ratelimit`.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    ASGIMiddleware,
    AuthenticationResult,
)
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from appliance.observability import get_logger
from appliance.request_id import REQUEST_ID_HEADER, request_id_for
from appliance.security import InvalidTokenError, TokenService
from appliance.security.revocation import is_revoked

_log = get_logger("hygie.access")


class RequestIdMiddleware(ASGIMiddleware):
    """Give each request an id (the caller's if well-formed), echo it, and log the outcome.

    The access log holds method, route path, status and duration only: never the query
    string, headers or body, where tokens and patient data travel.
    """

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request_id = request_id_for(scope)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                name = REQUEST_ID_HEADER.encode()
                if not any(key.lower() == name for key, _ in headers):  # problems set it already
                    headers.append((name, request_id.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await next_app(scope, receive, send_with_id)
            finally:
                _log.info(
                    "request",
                    method=scope.get("method"),
                    path=scope.get("path"),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Turn ``Authorization: Bearer <jwt>`` into a :class:`Principal` on ``request.auth``."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException(
                "a bearer access token is required",
                headers={"WWW-Authenticate": 'Bearer realm="hygie"'},
            )
        tokens: TokenService | None = getattr(connection.app.state, "tokens", None)
        if tokens is None:
            raise NotAuthorizedException("token verification is unavailable (store not ready)")
        try:
            principal = tokens.verify(token.strip())
        except InvalidTokenError as exc:
            raise NotAuthorizedException(
                str(exc),
                headers={"WWW-Authenticate": 'Bearer realm="hygie", error="invalid_token"'},
            ) from exc
        platform = getattr(connection.app.state, "platform", None)
        if platform is None:
            raise NotAuthorizedException("token verification is unavailable (store not ready)")
        if is_revoked(platform.store, principal):
            raise NotAuthorizedException(
                "invalid access token: revoked",
                headers={"WWW-Authenticate": 'Bearer realm="hygie", error="invalid_token"'},
            )
        return AuthenticationResult(user=principal.subject, auth=principal)
