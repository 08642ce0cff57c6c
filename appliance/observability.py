"""Structured JSON logs (structlog), Prometheus metrics and OpenTelemetry tracing.

Logs carry the request id and never bodies, headers or query strings, so that a token or a
patient's name cannot leak into a log file by accident.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from litestar.plugins.opentelemetry import OpenTelemetryConfig
from litestar.plugins.prometheus import PrometheusConfig

from appliance.config import Settings

_SENSITIVE_KEYS = frozenset(
    {"authorization", "cookie", "password", "token", "access_token", "refresh_token", "key"}
)


def _drop_sensitive(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in list(event_dict):
        if key.lower() in _SENSITIVE_KEYS:
            event_dict[key] = "********"
    return event_dict


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging to one JSON (or console, in dev) stream on stderr."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_sensitive,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(settings.log_level)
        ),
        # Resolve sys.stderr at each call so redirected streams (tests, daemons) are honoured.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # uvicorn's access log would print query strings; our middleware logs requests instead.
    logging.getLogger("uvicorn.access").disabled = True


def prometheus_config(settings: Settings) -> PrometheusConfig:
    return PrometheusConfig(
        app_name=settings.service_name,
        prefix="hygie",
        group_path=True,
        exclude=["/metrics"],
    )


def opentelemetry_config(settings: Settings) -> OpenTelemetryConfig | None:
    """Tracing is off unless enabled; with an OTLP endpoint spans are exported over HTTP."""
    if not settings.tracing_enabled:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        headers = _parse_headers(settings.otlp_headers)
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers=headers))
        )
    return OpenTelemetryConfig(tracer_provider=provider, exclude=["/metrics", "/health"])


def _parse_headers(raw: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in (raw or "").split(","):
        if "=" in item:
            name, value = item.split("=", 1)
            headers[name.strip()] = value.strip()
    return headers


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
