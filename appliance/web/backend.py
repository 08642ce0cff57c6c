"""The UI talks to the appliance's own HTTP API, in process, with the user's access token.

Each page calls the same routes an integration would (``/api/v1/...``), through an
``httpx`` ASGI transport straight into the running Litestar app: no socket, no second
server. So a page can never see more than the user's token allows, every patient read is
audited by the route that serves it (under the page's request id and the browser's
address), and validation messages come from the API's own problem details.
"""

from __future__ import annotations

from typing import Any

import httpx
from litestar import Request

from appliance.request_id import REQUEST_ID_HEADER
from services.identity.cards import DEVICE_COOKIE, valid_device

INTERNAL_BASE = "http://hygie.internal"
TIMEOUT_S = 300.0
"""Long enough for an LLM draft on CPU; ordinary calls answer in milliseconds."""


class ApiError(Exception):
    """A 4xx/5xx answer of the API, with its problem details."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status}: {problem.get('detail') or problem.get('title')}")
        self.status = status
        self.problem = problem

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("title") or "")

    def field_errors(self) -> dict[str, str]:
        """``errors`` of a validation problem as ``{dotted key: message}`` (first per key)."""
        found: dict[str, str] = {}
        for item in self.problem.get("errors") or []:
            if isinstance(item, dict):
                key = str(item.get("key") or "")
                found.setdefault(key, str(item.get("message") or ""))
        return found


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client and request.client.host else "127.0.0.1"


async def call_app(
    app: Any,
    method: str,
    path: str,
    *,
    client_addr: str,
    token: str | None = None,
    request_id: str | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One request into ``app`` as if it came from ``client_addr`` with ``token``."""
    headers = dict(kwargs.pop("headers", None) or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    transport = httpx.ASGITransport(app=app, client=(client_addr, 0))
    async with httpx.AsyncClient(
        transport=transport, base_url=INTERNAL_BASE, timeout=TIMEOUT_S
    ) as client:
        return await client.request(method, path, headers=headers, **kwargs)


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"title": response.reason_phrase, "status": response.status_code}
    if isinstance(body, dict):
        if "error" in body and "title" not in body:  # OAuth endpoints (RFC 6749 errors)
            return {"title": body.get("error"), "detail": body.get("error_description", "")}
        return body
    return {"title": response.reason_phrase, "status": response.status_code}


class Api:
    """The API as the signed-in user of ``request`` sees it."""

    def __init__(self, request: Request[Any, Any, Any], token: str) -> None:
        self.app = request.app
        self.token = token
        self.client_addr = client_address(request)
        self.request_id = str(request.scope.get("state", {}).get("request_id", "")) or None
        # The terminal's cookie goes with each call, so that card reads use the reader of
        # this terminal's workstation (docs/cards.md); nothing else of the browser's.
        device = request.cookies.get(DEVICE_COOKIE, "")
        self.device = device if valid_device(device) else None

    async def raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.device is not None:
            headers = dict(kwargs.get("headers") or {})
            headers["Cookie"] = f"{DEVICE_COOKIE}={self.device}"
            kwargs["headers"] = headers
        return await call_app(
            self.app,
            method,
            path,
            client_addr=self.client_addr,
            token=self.token,
            request_id=self.request_id,
            **kwargs,
        )

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer; :class:`ApiError` for any status of 400 or more."""
        response = await self.raw(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError(response.status_code, _problem(response))
        if not response.content:
            return None
        if "json" not in response.headers.get("content-type", ""):
            return response.content
        return response.json()

    async def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None and v != ""}
        return await self.call("GET", path, params=clean)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        if body is not None:
            kwargs["json"] = body
        return await self.call("POST", path, **kwargs)

    async def put(self, path: str, body: Any) -> Any:
        return await self.call("PUT", path, json=body)

    async def optional(self, path: str, **params: Any) -> Any:
        """Like :meth:`get`, but ``None`` when the route is absent, refused or failing:
        for side panels of a page, which must not take the whole page down."""
        try:
            return await self.get(path, **params)
        except ApiError:
            return None
