"""The Litestar application factory: platform middleware, health, metrics and services.

The factory never fails because of the store: if the key is wrong or missing, the app still
starts, ``/health/ready`` explains the problem, and data endpoints answer 503.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.exceptions import ClientException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusController

from appliance import __version__
from appliance.config import Settings, load_settings
from appliance.dependencies import DEPENDENCIES
from appliance.health import HealthController
from appliance.keys import SecretError
from appliance.middleware import BearerAuthMiddleware, RequestIdMiddleware
from appliance.observability import (
    configure_logging,
    get_logger,
    opentelemetry_config,
    prometheus_config,
)
from appliance.openapi_docs import document_problems, forbid_additional_properties
from appliance.platform import open_platform
from appliance.plugin import ServicePlugin
from appliance.problems import EXCEPTION_HANDLERS
from appliance.registry import INSTALLED_SERVICES, domain_migrations
from appliance.security.ratelimit import RateLimitMiddleware
from appliance.store import StoreError
from appliance.tls import TLSController
from appliance.web import web_router

PUBLIC_PATHS = ["^/health/", "^/metrics", "^/schema"]
_log = get_logger("hygie.app")


def _open_platform(app: Litestar) -> None:
    settings: Settings = app.state.settings
    try:
        platform = open_platform(settings)
    except (SecretError, StoreError) as exc:
        app.state.platform = None
        app.state.tokens = None
        app.state.platform_error = str(exc)
        _log.error("store_unavailable", reason=str(exc))
        return
    app.state.platform = platform
    app.state.tokens = platform.tokens
    app.state.platform_error = None


def _close_platform(app: Litestar) -> None:
    platform = app.state.get("platform")
    if platform is not None:
        platform.close()
        app.state.platform = None


class _Request(Request[Any, Any, Any]):
    """msgspec raises UnicodeDecodeError / RecursionError, not DecodeError, for these bodies."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except (UnicodeDecodeError, RecursionError) as exc:
            kind = "is not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "nests too deep"
            raise ClientException(f"the JSON body {kind}") from exc


class _Metrics(PrometheusController):
    path = "/metrics"
    include_in_schema = False


def create_app(
    settings: Settings | None = None, plugins: Sequence[ServicePlugin] | None = None
) -> Litestar:
    settings = settings or load_settings()
    plugins = tuple(INSTALLED_SERVICES if plugins is None else plugins)
    configure_logging(settings)
    controllers: list[Any] = [HealthController, _Metrics, TLSController]
    for plugin in plugins:
        controllers.extend(plugin.controllers)
    document_problems(controllers)
    controllers.append(web_router())  # the counter UI (/ui): HTML, outside the API schema
    middleware: list[Any] = [RequestIdMiddleware()]
    tracing = opentelemetry_config(settings)
    if tracing is not None:
        middleware.append(tracing.middleware)
    middleware.append(prometheus_config(settings).middleware)
    if settings.rate_limit_enabled:
        middleware.append(
            RateLimitMiddleware(
                per_client=settings.rate_limit_per_client,
                auth_per_client=settings.rate_limit_auth_per_client,
                window_s=settings.rate_limit_window_s,
            )
        )
    middleware.append(DefineMiddleware(BearerAuthMiddleware, exclude=PUBLIC_PATHS))
    openapi = OpenAPIConfig(
        title="Hygie appliance API",
        version=__version__,
        path="/schema",
        render_plugins=[JsonRenderPlugin(), SwaggerRenderPlugin()],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
            }
        ),
    )
    return Litestar(
        route_handlers=controllers,
        dependencies=DEPENDENCIES,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi,
        request_max_body_size=settings.max_body_bytes,
        request_class=_Request,
        on_startup=[_open_platform, forbid_additional_properties],
        on_shutdown=[_close_platform],
        state=State(
            {
                "settings": settings,
                "domain_migrations": domain_migrations(plugins),
                "platform": None,
                "tokens": None,
                "platform_error": "not started",
            }
        ),
        logging_config=None,
        debug=False,
    )
