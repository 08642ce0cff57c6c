"""The counter UI: server-rendered French pages (Jinja2) with htmx, under ``/ui``.

A composition-root package: it may call every service, through the appliance's own HTTP API
with the signed-in user's token (:mod:`appliance.web.backend`); no service imports it. The
front-end packages (htmx, axe-core for the tests) come from the npm registry at install time
(``install.sh`` runs ``npm ci`` in this folder, into the git-ignored ``node_modules``); there
is no build step. See ``docs/web.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.static_files import create_static_files_router

from appliance.web.auth import AUTH_HANDLERS, OPEN
from appliance.web.billing import BILLING_HANDLERS
from appliance.web.core import EXCEPTION_HANDLERS, STATIC_DIR, UI, WebSessionMiddleware
from appliance.web.documents import DOCUMENT_HANDLERS
from appliance.web.imports import IMPORT_HANDLERS
from appliance.web.pages import PAGE_HANDLERS

NODE_MODULES = Path(__file__).parent / "node_modules"
VENDOR_FILES = {
    "htmx.min.js": NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js",
}
"""The only npm files the UI serves (an allow-list, not the whole node_modules)."""


@get(UI + "/vendor/{name:str}", opt=OPEN, sync_to_thread=False, include_in_schema=False)
def vendor(name: FromPath[str]) -> Response[bytes]:
    """A front-end library installed from npm (``install.sh``), cached a day."""
    path = VENDOR_FILES.get(name)
    if path is None or not path.is_file():
        raise NotFoundException(f"no vendor file '{name[:40]}' (run ./install.sh)")
    return Response(
        path.read_bytes(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


def web_router() -> Router:
    """Every route of the UI, behind the session middleware and French error pages."""
    static = create_static_files_router(
        path=UI + "/static",
        directories=[STATIC_DIR],
        opt=OPEN,
        include_in_schema=False,
        cache_control=None,
    )
    handlers: list[Any] = [
        *AUTH_HANDLERS,
        *PAGE_HANDLERS,
        *DOCUMENT_HANDLERS,
        *IMPORT_HANDLERS,
        *BILLING_HANDLERS,
        vendor,
        static,
    ]
    return Router(
        path="/",
        route_handlers=handlers,
        middleware=[WebSessionMiddleware()],
        exception_handlers=EXCEPTION_HANDLERS,
        opt={"exclude_from_auth": True},
        include_in_schema=False,
    )


__all__ = ["VENDOR_FILES", "web_router"]
