"""RFC 9457 problem details for every error the API returns.

Clients (the web UI, integrations) get one machine-readable shape for all failures, and an
unexpected exception becomes a 500 problem with the request id, never a traceback.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from appliance.observability import get_logger
from appliance.request_id import REQUEST_ID_HEADER, request_id_for
from appliance.store import StoreError, VersionConflictError

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:hygie:problem:"

_log = get_logger("hygie.errors")


class ProblemDetail(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The RFC 9457 members, plus the ``request_id`` and ``errors`` extensions (for the docs).

    Other extension members are added at the top level of the JSON object, as RFC 9457 asks.
    """

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


class Problem(HTTPException):
    """An HTTP error raised by our own code, with a stable problem ``type`` slug."""

    def __init__(
        self,
        status_code: int,
        problem_type: str,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail=detail, status_code=status_code, extra=extra)
        self.problem_type = problem_type


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    detail: str | None,
    *,
    problem_type: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    request_id = request_id_for(request.scope)
    headers = {**(headers or {}), REQUEST_ID_HEADER: request_id}
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = msgspec.to_builtins(
        ProblemDetail(
            type=f"{TYPE_PREFIX}{problem_type}" if problem_type else "about:blank",
            title=phrase,
            status=status,
            detail=detail,
            instance=request.url.path,
            request_id=request_id,
            errors=errors,
        )
    )
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _validation_errors(exc: ValidationException) -> list[dict[str, Any]] | None:
    extra = exc.extra
    if isinstance(extra, list):
        return [item if isinstance(item, dict) else {"message": str(item)} for item in extra]
    if isinstance(extra, dict):
        return [extra]
    return None


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        return problem_response(
            request,
            exc.status_code,
            "the request is not valid: see 'errors'",
            problem_type="validation",
            errors=_validation_errors(exc),
        )
    problem_type = getattr(exc, "problem_type", None)
    extra = exc.extra if isinstance(exc.extra, dict) else None
    return problem_response(
        request,
        exc.status_code,
        exc.detail,
        problem_type=problem_type,
        extra=extra,
        headers=exc.headers,
    )


def handle_version_conflict(
    request: Request[Any, Any, Any], exc: VersionConflictError
) -> Response[Any]:
    return problem_response(
        request,
        409,
        str(exc),
        problem_type="version-conflict",
        extra={"expected_version": exc.expected, "latest_version": exc.actual},
    )


def handle_store_error(request: Request[Any, Any, Any], exc: StoreError) -> Response[Any]:
    _log.error("store_error", error_type=exc.__class__.__name__, path=request.url.path)
    return problem_response(
        request, 503, "the encrypted store is unavailable", problem_type="store-unavailable"
    )


def _where(exc: BaseException) -> str:
    """Innermost ``file:line`` of a traceback: enough to find the bug, no values leaked."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "unknown"


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The exception message may quote patient data, so only its type and location are logged.
    _log.error(
        "unhandled_exception",
        error_type=exc.__class__.__name__,
        where=_where(exc),
        path=request.url.path,
    )
    return problem_response(request, 500, "internal error; the request id identifies it")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    HTTPException: handle_http_exception,
    VersionConflictError: handle_version_conflict,
    StoreError: handle_store_error,
    Exception: handle_unexpected,
}
