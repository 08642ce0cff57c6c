"""Helpers for the identity tests: accounts, RPPS numbers, the browser side of the
authorization code flow with PKCE, token requests."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from click.testing import CliRunner
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.cli import main
from appliance.config import load_settings
from appliance.platform import Platform
from appliance.tasks import record_heartbeat
from services.identity.accounts import CLI_ACTOR, Accounts
from services.identity.logic import luhn_valid, pkce_challenge
from services.identity.models import UserCreate
from services.identity.roles import Role
from tests.conftest import hygie_env

PASSWORD = "Comptoir-2024!ok"
WEB = "hygie-web"
WEB_REDIRECT = "http://127.0.0.1:8000/ui/callback"
_REQUEST_ID = re.compile(r'name="request_id" value="([^"]+)"')


def rpps(seed: int) -> str:
    """A valid RPPS number (11 digits, starting with 1, Luhn key) made from ``seed``."""
    body = f"1{seed:09d}"
    for key in range(10):
        if luhn_valid(body + str(key)):
            return body + str(key)
    raise AssertionError("unreachable")


def accounts_of(platform: Platform) -> Accounts:
    return Accounts(platform.settings, platform.store, platform.audit)


def make_user(
    platform: Platform,
    username: str,
    role: Role | str = Role.PHARMACIEN_ADJOINT,
    *,
    password: str = PASSWORD,
    rpps_number: str | None = None,
    display_name: str | None = None,
) -> str:
    """Create an account as root would; returns its user id."""
    role = Role(role)
    if rpps_number is None and role in (Role.PHARMACIEN_TITULAIRE, Role.PHARMACIEN_ADJOINT):
        rpps_number = rpps(abs(hash(username)) % 10**8)
    body = UserCreate(
        username=username,
        display_name=display_name or f"Agent {username}",
        role=role,
        password=password,
        rpps=rpps_number,
    )
    return accounts_of(platform).create(body, CLI_ACTOR).entity_id


def app_platform(client: Any) -> Platform:
    platform = client.app.state.platform
    assert platform is not None
    return platform


@dataclass
class Authorization:
    verifier: str
    request_id: str
    state: str
    page: Any


def start(
    client: Any,
    *,
    client_id: str = WEB,
    redirect_uri: str = WEB_REDIRECT,
    scope: str | None = None,
    state: str = "etat-123",
    nonce: str | None = "nonce-456",
    verifier: str | None = None,
    **extra: str,
) -> Authorization:
    """Open the login page the way the web UI sends the browser there."""
    verifier = verifier or secrets.token_urlsafe(48)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
        **extra,
    }
    if scope is not None:
        params["scope"] = scope
    if nonce is not None:
        params["nonce"] = nonce
    page = client.get("/oauth/authorize", params=params)
    assert page.status_code == 200, page.text
    found = _REQUEST_ID.search(page.text)
    assert found, page.text
    return Authorization(verifier=verifier, request_id=found.group(1), state=state, page=page)


def submit(client: Any, auth: Authorization, **fields: str) -> Any:
    data = {"request_id": auth.request_id, "method": "password", **fields}
    return client.post("/oauth/authorize", data=data, follow_redirects=False)


def code_from(response: Any, state: str | None = None) -> str:
    assert response.status_code == 303, (response.status_code, response.text[:500])
    query = parse_qs(urlsplit(response.headers["location"]).query)
    if state is not None:
        assert query["state"] == [state]
    return query["code"][0]


def exchange(
    client: Any,
    code: str,
    verifier: str,
    *,
    client_id: str = WEB,
    redirect_uri: str = WEB_REDIRECT,
    **extra: str,
) -> Any:
    return client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": client_id,
            **extra,
        },
    )


def login(
    client: Any, username: str, password: str = PASSWORD, *, scope: str | None = None
) -> dict[str, Any]:
    """The whole authorization code flow; returns the token response."""
    auth = start(client, scope=scope)
    code = code_from(submit(client, auth, username=username, password=password), auth.state)
    response = exchange(client, code, auth.verifier)
    assert response.status_code == 200, response.text
    return dict(response.json())


def refresh(client: Any, token: str, client_id: str = WEB) -> Any:
    return client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_actions(platform: Platform) -> list[tuple[str, str, str]]:
    """(action, object id, outcome) of every audit entry, in order."""
    return [
        (entry.action, entry.object_id, entry.outcome)
        for entry in platform.audit.entries(limit=100_000)
    ]


@contextmanager
def shared_client(tmp_path: Path, **settings_update: Any) -> Iterator[TestClient[Any]]:
    """A started appliance for a whole test module (tests that only read, or that create
    uniquely named accounts): one key and migration setup instead of one per test."""
    (tmp_path / "hygie.toml").write_text("# test configuration\n")
    values = hygie_env(tmp_path)
    cleared: dict[str, str | None] = {
        key: None
        for key in os.environ
        if key.startswith("HYGIE_") or key == "CREDENTIALS_DIRECTORY"
    }
    runner = CliRunner()
    for args in (["keys", "init"], ["db", "migrate"]):
        result = runner.invoke(main, args, env={**cleared, **values}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    settings = load_settings(values).model_copy(update=settings_update)
    app = create_app(settings)
    with TestClient(app=app) as client:
        record_heartbeat(app.state.platform.store, "test-worker")
        yield client
