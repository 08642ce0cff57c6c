"""Role-based access, route by route: every operation of the OpenAPI schema, called with a
token of every role (and none), is allowed exactly when the role's scopes cover the scopes
the route declares.

The test fails when a new route forgets its guard (no declared scope and not marked
public), when a route is public without being listed below as intentionally public, when a
route is left out of the schema (and so out of this matrix), and when a route asks for a
scope that no role table entry knows (nobody could ever call it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Controller, Litestar, get
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.config import Settings
from appliance.plugin import ServicePlugin
from appliance.registry import INSTALLED_SERVICES
from appliance.security import Principal, declared_scopes, requires
from appliance.tasks import record_heartbeat
from services.identity.roles import SCOPES, Role, role_scopes

INTENTIONALLY_PUBLIC = frozenset(
    {
        ("GET", "/health/live"),  # probes: systemd and load balancers, no token
        ("GET", "/health/ready"),
        ("GET", "/.well-known/openid-configuration"),  # OpenID Connect discovery
        ("GET", "/oauth/jwks"),  # public keys that verify our tokens
        ("GET", "/oauth/authorize"),  # the login page
        ("POST", "/oauth/authorize"),  # the login form
        ("POST", "/oauth/token"),  # clients authenticate with their own credentials
        ("POST", "/oauth/revoke"),  # idem (RFC 7009)
        ("GET", "/oauth/federation/start"),  # leaving for the external provider
        ("GET", "/oauth/federation/callback"),  # coming back from it
        ("GET", "/tls/ca.pem"),  # the CA certificate terminals must trust
        ("GET", "/tls/ca.crt"),
    }
)
OUTSIDE_SCHEMA = frozenset({"/metrics", "/schema", "/ui"})
"""Path prefixes deliberately left out of the OpenAPI schema (public by PUBLIC_PATHS; ``/ui``:
the HTML pages of the counter UI, guarded by the same scopes through its session cookie and
checked by tests/test_web_routes.py)."""

PARAM_CANDIDATES = ("u-0000000000000000", "x1", "00000001", "3400930000001", "1", "x")
SUBJECT = "u-0000000000000000"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Any

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)


def _openapi_path(litestar_path: str) -> str:
    return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", litestar_path)


def operations(app: Litestar, schema: dict[str, Any]) -> tuple[list[Operation], list[str]]:
    """Every operation of the schema with its handler, and every problem found."""
    handlers: dict[tuple[str, str], Any] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in getattr(handler, "http_methods", ()):
                if method in ("OPTIONS", "HEAD"):
                    continue
                handlers[(method, _openapi_path(route.path))] = handler
    problems = []
    found = []
    for path, item in schema["paths"].items():
        for method in item:
            key = (method.upper(), path)
            if key not in handlers:
                problems.append(f"{method.upper()} {path}: in the schema but no handler")
                continue
            found.append(Operation(method.upper(), path, handlers[key]))
    in_schema = {op.key for op in found}
    for key in handlers:
        if key in in_schema or key[1].startswith(tuple(OUTSIDE_SCHEMA)):
            continue
        problems.append(f"{key[0]} {key[1]}: not in the OpenAPI schema, so not in this matrix")
    for op in found:
        public = bool(op.handler.opt.get("public"))
        scopes = declared_scopes(op.handler)
        label = f"{op.method} {op.path}"
        if public and op.key not in INTENTIONALLY_PUBLIC:
            problems.append(f"{label}: public but not listed as intentionally public")
        if not public and scopes is None:
            problems.append(f"{label}: no guard declares its scopes (requires(...))")
        if not public and op.key in INTENTIONALLY_PUBLIC:
            problems.append(f"{label}: listed as public but guarded: update the list")
        for scope in sorted(scopes or ()):
            if scope not in SCOPES:
                problems.append(
                    f"{label}: scope '{scope}' is not in services/identity/roles.py SCOPES"
                )
    listed = {op.key for op in found}
    for key in sorted(INTENTIONALLY_PUBLIC - listed):
        problems.append(f"{key[0]} {key[1]}: listed as public but no such operation")
    return found, problems


def _fill(path: str, item: dict[str, Any], method: str) -> str:
    params = {p["name"]: p for p in item.get(method.lower(), {}).get("parameters", [])}
    params.update({p["name"]: p for p in item.get("parameters", [])})

    def value(match: re.Match[str]) -> str:
        schema = params.get(match.group(1), {}).get("schema", {})
        if schema.get("type") == "integer":
            return "1"
        if schema.get("format") == "uuid":
            return "00000000-0000-4000-8000-000000000000"
        pattern = schema.get("pattern")
        for candidate in PARAM_CANDIDATES:
            if pattern is None or re.search(pattern, candidate):
                return candidate
        return "x"

    return re.sub(r"\{(\w+)\}", value, path)


def _call(client: TestClient[Any], op: Operation, url: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if op.method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return client.request(op.method, url, **kwargs)


def _asks_for_a_token(response: Any) -> bool:
    """401 with a bearer challenge, or a guard's 403 (the token endpoint's own 401
    ``invalid_client`` with a Basic challenge is about client credentials, not a token)."""
    challenge = response.headers.get("www-authenticate", "").lower()
    return (response.status_code == 401 and "bearer" in challenge) or _denied_by_guard(response)


def _denied_by_guard(response: Any) -> bool:
    return response.status_code == 403 and "missing scope" in response.json().get("detail", "")


@pytest.fixture
def matrix_client(settings: Settings) -> Iterator[TestClient[Any]]:
    app = create_app(settings)
    with TestClient(app=app) as test_client:
        record_heartbeat(app.state.platform.store, "test-worker")
        yield test_client


def test_every_route_is_guarded_or_intentionally_public(
    matrix_client: TestClient[Any],
) -> None:
    schema = matrix_client.get("/schema/openapi.json").json()
    found, problems = operations(matrix_client.app, schema)
    assert found
    assert problems == []


def test_every_role_gets_exactly_what_the_routes_declare(matrix_client: TestClient[Any]) -> None:
    schema = matrix_client.get("/schema/openapi.json").json()
    found, problems = operations(matrix_client.app, schema)
    assert problems == []
    tokens_service = matrix_client.app.state.platform.tokens
    tokens = {
        role: tokens_service.issue(subject=SUBJECT, role=role.value, scopes=role_scopes(role))
        for role in Role
    }
    wrong: list[str] = []
    for op in found:
        url = _fill(op.path, schema["paths"][op.path], op.method)
        label = f"{op.method} {op.path}"
        required = declared_scopes(op.handler)
        anonymous = _call(matrix_client, op, url, None)
        if op.key in INTENTIONALLY_PUBLIC:
            if _asks_for_a_token(anonymous) or anonymous.status_code >= 500:
                wrong.append(f"{label} anonymous: {anonymous.status_code} on a public route")
            continue
        if anonymous.status_code != 401:
            wrong.append(f"{label} anonymous: {anonymous.status_code}, expected 401")
        assert required is not None
        for role, token in tokens.items():
            allowed = Principal(
                subject=SUBJECT, role=role.value, scopes=role_scopes(role)
            ).has_scopes(required)
            response = _call(matrix_client, op, url, token)
            if response.status_code >= 500:
                wrong.append(f"{label} {role.value}: {response.status_code}")
            elif allowed and (response.status_code == 401 or _denied_by_guard(response)):
                wrong.append(f"{label} {role.value}: refused ({response.status_code})")
            elif not allowed and not _denied_by_guard(response):
                wrong.append(f"{label} {role.value}: {response.status_code}, expected 403")
    assert wrong == []


def test_patient_data_never_reaches_the_technical_administrator(
    matrix_client: TestClient[Any],
) -> None:
    schema = matrix_client.get("/schema/openapi.json").json()
    found, _ = operations(matrix_client.app, schema)
    admin = role_scopes(Role.ADMIN_TECHNIQUE)
    for op in found:
        required = declared_scopes(op.handler) or frozenset()
        if any(scope.startswith("patients:") for scope in required):
            assert not Principal(subject="a", role="a", scopes=admin).has_scopes(required)


# --- the matrix catches mistakes --------------------------------------------------------------


class ForgetfulController(Controller):
    path = "/api/forgetful"

    @get("/guarded", guards=[requires("patients:read")], sync_to_thread=False)
    def guarded(self) -> str:
        return "ok"

    @get("/open", sync_to_thread=False)
    def open_by_mistake(self) -> str:
        return "patient data"

    @get("/public", opt={"exclude_from_auth": True, "public": True}, sync_to_thread=False)
    def public_but_unlisted(self) -> str:
        return "hello"

    @get("/unknown-scope", guards=[requires("patients:delete")], sync_to_thread=False)
    def unknown_scope(self) -> str:
        return "?"

    @get(
        "/hidden",
        guards=[requires("patients:read")],
        include_in_schema=False,
        sync_to_thread=False,
    )
    def hidden(self) -> str:
        return "?"


def test_the_matrix_fails_when_a_route_forgets_its_guard(settings: Settings) -> None:
    plugin = ServicePlugin(name="forgetful", controllers=(ForgetfulController,))
    app = create_app(settings, plugins=(*INSTALLED_SERVICES, plugin))
    with TestClient(app=app) as test_client:
        schema = test_client.get("/schema/openapi.json").json()
        _, problems = operations(test_client.app, schema)
        # and the route really is open: without a guard the middleware alone lets any token in
        token = test_client.app.state.platform.tokens.issue(
            subject="u", role="admin_technique", scopes=role_scopes(Role.ADMIN_TECHNIQUE)
        )
        response = test_client.get(
            "/api/forgetful/open", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200
    assert problems == [
        "GET /api/forgetful/hidden: not in the OpenAPI schema, so not in this matrix",
        "GET /api/forgetful/open: no guard declares its scopes (requires(...))",
        "GET /api/forgetful/public: public but not listed as intentionally public",
        "GET /api/forgetful/unknown-scope: scope 'patients:delete' is not in "
        "services/identity/roles.py SCOPES",
    ]
