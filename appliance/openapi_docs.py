"""OpenAPI documentation of the cross-cutting contract: problem details and bearer scopes.

Each handler would otherwise have to repeat the same error responses; documenting them here
keeps the schema truthful (schemathesis checks responses against it) without boilerplate in
every service.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import Controller, Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Schema

from appliance.problems import PROBLEM_MEDIA_TYPE, ProblemDetail
from appliance.security.guards import ScopeGuard

COMMON_PROBLEMS = {
    400: "Invalid request (problem details, with 'errors' for field errors)",
    404: "Not found",
    413: "Request body too large",
    429: "Too many requests (see Retry-After)",
    503: "Encrypted store unavailable",
}
GUARDED_PROBLEMS = {
    401: "Missing, invalid or expired bearer token",
    403: "Token lacks a required scope",
    409: "Conflict with the current state (stale version, duplicate)",
}


def _spec(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=ProblemDetail,
        media_type=PROBLEM_MEDIA_TYPE,
        description=description,
        generate_examples=False,
    )


def _scopes(handler: HTTPRouteHandler, owner: Any) -> list[str] | None:
    owner_guards = getattr(owner, "guards", None)
    if not isinstance(owner_guards, list | tuple):  # Controller slots unset on the class
        owner_guards = ()
    guards = [*owner_guards, *(handler.guards or ())]
    found = [guard for guard in guards if isinstance(guard, ScopeGuard)]
    if not found:
        return None
    return sorted({scope for guard in found for scope in guard.scopes})


def _handlers(item: Any) -> Iterable[tuple[HTTPRouteHandler, Any]]:
    if isinstance(item, type) and issubclass(item, Controller):
        for value in vars(item).values():
            if isinstance(value, HTTPRouteHandler):
                yield value, item
    elif isinstance(item, HTTPRouteHandler):
        yield item, None


DOCUMENTED_PREFIXES = ("/api", "/health")
"""Our REST surface. Protocol endpoints (OAuth, OIDC) answer in their own RFCs' formats."""


def _path(handler: HTTPRouteHandler, owner: Any) -> str:
    base = owner.path if owner is not None and isinstance(owner.path, str) else ""
    return base + next(iter(handler.paths), "")


def document_problems(route_handlers: Iterable[Any]) -> None:
    """Add problem responses and per-operation bearer security to REST handlers."""
    for item in route_handlers:
        for handler, owner in _handlers(item):
            if not _path(handler, owner).startswith(DOCUMENTED_PREFIXES):
                continue
            scopes = _scopes(handler, owner)
            wanted = dict(COMMON_PROBLEMS)
            if scopes is not None:
                wanted |= GUARDED_PROBLEMS
                # OpenAPI 3.1 lets a non-OAuth scheme list the roles/scopes it requires.
                handler.security = [{"bearer": scopes}]
            existing = dict(handler.responses or {})
            for status, description in wanted.items():
                existing.setdefault(status, _spec(description))
            handler.responses = existing


def _forbidding_structs() -> dict[str, type[msgspec.Struct]]:
    found: dict[str, type[msgspec.Struct]] = {}
    pending: list[type[msgspec.Struct]] = [msgspec.Struct]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__struct_config__.forbid_unknown_fields:
            found[cls.__name__] = cls
    return found


def forbid_additional_properties(app: Litestar) -> None:
    """Mark request bodies that refuse unknown fields with ``additionalProperties: false``.

    Litestar does not carry msgspec's ``forbid_unknown_fields`` into the schema; clients and
    fuzzers should see from the schema that an unknown field is an error.
    """
    schema = app.openapi_schema
    components = schema.components.schemas if schema.components else None
    if not components:
        return
    structs = _forbidding_structs()
    for name, component in components.items():
        named = name in structs or name.rsplit("_", 1)[-1] in structs
        if named and isinstance(component, Schema):
            component.additional_properties = False
