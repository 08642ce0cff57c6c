"""The application shell: probes, metrics, OpenAPI, problem details, auth, request ids."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.app import PUBLIC_PATHS, create_app
from appliance.config import Settings
from appliance.security import declared_scopes

PROBLEM = "application/problem+json"


def test_liveness(client: TestClient[Any]) -> None:
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readiness_ok_with_store_worker_and_disk(client: TestClient[Any]) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"store", "audit_store", "schema", "worker", "secrets", "disk"}


def test_readiness_reports_a_missing_secret(client: TestClient[Any], settings: Settings) -> None:
    (settings.key_path / "field.key").unlink()
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert "field.key" in response.json()["checks"]["secrets"]["reason"]


def test_readiness_reports_low_disk(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"min_free_disk_mb": 10**9}))
    with TestClient(app=app) as client:
        from appliance.tasks import record_heartbeat

        record_heartbeat(app.state.platform.store)
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["checks"]["disk"]["ok"] is False
    assert "MiB free" in body["checks"]["disk"]["reason"]
    assert body["checks"]["store"]["ok"] is True


def test_metrics_exposes_prometheus_text(client: TestClient[Any]) -> None:
    client.get("/health/live")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "hygie_requests_total" in response.text


def test_openapi_schema_is_served(client: TestClient[Any]) -> None:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/workstations" in schema["paths"]
    assert "bearer" in schema["components"]["securitySchemes"]
    assert client.get("/schema").status_code == 200


def test_every_route_declares_scopes_or_is_public(settings: Settings) -> None:
    """No handler may be reachable without a declared scope, except the public probes."""
    app = create_app(settings)
    unguarded = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            public = any(re.match(pattern, route.path) for pattern in PUBLIC_PATHS) or (
                handler.opt.get("public")
            )
            methods = set(getattr(handler, "http_methods", ()))
            if methods == {"OPTIONS"}:  # Litestar's automatic CORS preflight handlers
                continue
            if not public and declared_scopes(handler) is None:
                unguarded.append(f"{route.path} {sorted(getattr(handler, 'http_methods', []))}")
    assert unguarded == []


def test_unknown_route_is_a_404_problem(client: TestClient[Any]) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == 404


def test_wrong_method_is_a_405_problem(client: TestClient[Any], auth: dict[str, str]) -> None:
    response = client.delete("/api/workstations", headers=auth)
    assert response.status_code == 405
    assert response.headers["content-type"].startswith(PROBLEM)


def test_missing_token_is_401_with_challenge(client: TestClient[Any]) -> None:
    response = client.get("/api/workstations")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer "])
def test_bad_tokens_are_401(client: TestClient[Any], header: str) -> None:
    response = client.get("/api/workstations", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)


def test_expired_token_is_401(client: TestClient[Any], platform: Any) -> None:
    token = platform.tokens.issue(
        subject="u", role="r", scopes=["workstations:read"], ttl_s=60, now=1_000_000
    )
    response = client.get("/api/workstations", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_missing_scope_is_403(client: TestClient[Any], token_for: Callable[..., str]) -> None:
    headers = {"Authorization": f"Bearer {token_for('workstations:read')}"}
    response = client.post(
        "/api/workstations", json={"code": "c1", "label": "Comptoir 1"}, headers=headers
    )
    assert response.status_code == 403
    assert "workstations:write" in response.json()["detail"]


def test_wildcard_scope_grants_the_family(
    client: TestClient[Any], token_for: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {token_for('workstations:*')}"}
    assert client.get("/api/workstations", headers=headers).status_code == 200


def test_request_id_is_generated_and_echoed(client: TestClient[Any]) -> None:
    generated = client.get("/health/live").headers["x-request-id"]
    assert len(generated) >= 8
    echoed = client.get("/health/live", headers={"X-Request-ID": "counter-1-abcdef"})
    assert echoed.headers["x-request-id"] == "counter-1-abcdef"
    forged = client.get("/health/live", headers={"X-Request-ID": "bad id\nwith newline"})
    assert forged.headers["x-request-id"] != "bad id\nwith newline"


def test_problem_carries_request_id(client: TestClient[Any]) -> None:
    response = client.get("/missing", headers={"X-Request-ID": "trace-12345678"})
    assert response.json()["request_id"] == "trace-12345678"


def test_wrong_key_app_starts_and_explains(settings: Settings, auth: dict[str, str]) -> None:
    from appliance.keys import MASTER_KEY, new_master_key_text, write_secret

    write_secret(settings.key_path / MASTER_KEY, new_master_key_text())
    before = settings.domain_db_path.read_bytes()
    with TestClient(app=create_app(settings)) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert "configured key" in ready.json()["checks"]["store"]["reason"]
        data = client.get("/api/workstations", headers=auth)
        assert data.status_code in (401, 503)
        assert data.headers["content-type"].startswith(PROBLEM)
    assert settings.domain_db_path.read_bytes() == before


def test_logs_never_contain_tokens_or_bodies(
    client: TestClient[Any], auth: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client.post(
        "/api/workstations?secret=querystring-marker",
        json={"code": "c9", "label": "Body-Marker"},
        headers=auth,
    )
    err = capsys.readouterr().err
    token = auth["Authorization"].split()[1]
    assert token not in err
    assert "Body-Marker" not in err
    assert "querystring-marker" not in err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request" and "request_id" in line for line in lines)
