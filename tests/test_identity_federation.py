"""Federation end to end: appliance A logs its staff in through an external OpenID provider,
played by a second Hygie appliance B served over real HTTP on loopback.

The browser is simulated: it follows A's login page to B, logs in at B, comes back to A's
callback; A redeems B's code over the network, verifies B's ID token with B's published keys
and finds the local account by RPPS number.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.cli import main
from appliance.config import Settings, load_settings
from appliance.keys import write_secret
from appliance.platform import Platform, open_platform
from appliance.tasks import record_heartbeat
from services.identity.accounts import CLI_ACTOR
from services.identity.api import create_client
from services.identity.federation import CALLBACK_PATH, SECRET_NAME
from services.identity.models import ClientCreate
from tests.conftest import hygie_env
from tests.identity_support import (
    PASSWORD,
    accounts_of,
    app_platform,
    audit_actions,
    code_from,
    exchange,
    make_user,
    rpps,
    start,
)

PROVIDER_NAME = "Hygie voisine"
A_ISSUER = "http://127.0.0.1:8000"


@dataclass
class Provider:
    url: str
    settings: Settings
    platform: Platform


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _prepare(tmp_path: Path, **extra: str) -> Settings:
    (tmp_path / "hygie.toml").write_text("# test configuration\n")
    values = hygie_env(tmp_path, **extra)
    cleared: dict[str, str | None] = {key: None for key in values}
    runner = CliRunner()
    for args in (["keys", "init"], ["db", "migrate"]):
        result = runner.invoke(main, args, env={**cleared, **values}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return load_settings(values)


@pytest.fixture
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """Appliance B, the identity provider, on a loopback port."""
    import uvicorn

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = _prepare(tmp_path_factory.mktemp("provider"), HYGIE_PUBLIC_URL=url)
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    platform = open_platform(settings)
    try:
        yield Provider(url=url, settings=settings, platform=platform)
    finally:
        platform.close()
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def federated(settings: Settings, provider: Provider) -> Iterator[TestClient[Any]]:
    """Appliance A, registered at B as a confidential client, trusting B for logins."""
    _, secret = create_client(
        accounts_of(provider.platform),
        ClientCreate(
            client_id="hygie-a",
            name="Officine A",
            kind="confidential",
            redirect_uris=(A_ISSUER + CALLBACK_PATH,),
            scopes=("openid", "profile"),
        ),
        CLI_ACTOR,
    )
    assert secret
    write_secret(settings.key_path / SECRET_NAME, secret.encode() + b"\n")
    a_settings = settings.model_copy(
        update={
            "federation_issuer": provider.url,
            "federation_client_id": "hygie-a",
            "federation_name": PROVIDER_NAME,
            "federation_scopes": "openid profile",
            "federation_claim": "rpps",
            "federation_match": "rpps",
        }
    )
    app = create_app(a_settings)
    with TestClient(app=app) as client:
        record_heartbeat(app.state.platform.store, "test-worker")
        yield client


def _to_provider(client: TestClient[Any], auth: Any) -> str:
    assert PROVIDER_NAME in auth.page.text
    leave = client.get(
        "/oauth/federation/start", params={"request_id": auth.request_id}, follow_redirects=False
    )
    assert leave.status_code == 303, leave.text
    return str(leave.headers["location"])


def _login_at_provider(browser: httpx.Client, url: str, username: str) -> str:
    page = browser.get(url)
    assert page.status_code == 200, page.text
    request_id = page.text.split('name="request_id" value="', 1)[1].split('"', 1)[0]
    answer = browser.post(
        "/oauth/authorize",
        data={"request_id": request_id, "username": username, "password": PASSWORD},
    )
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"])


def _back_to_a(client: TestClient[Any], location: str) -> Any:
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == A_ISSUER + CALLBACK_PATH
    return client.get(f"{parts.path}?{parts.query}", follow_redirects=False)


def test_login_through_the_external_provider(
    federated: TestClient[Any], provider: Provider
) -> None:
    number = rpps(4242)
    local_id = make_user(
        app_platform(federated), "pauline", "pharmacien_adjoint", rpps_number=number
    )
    make_user(provider.platform, "p.durand", "pharmacien_adjoint", rpps_number=number)

    auth = start(federated, state="retour-a")
    upstream = _to_provider(federated, auth)
    assert upstream.startswith(provider.url + "/oauth/authorize?")
    query = parse_qs(urlsplit(upstream).query)
    assert query["client_id"] == ["hygie-a"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["nonce"]
    assert query["state"]

    with httpx.Client(base_url=provider.url, follow_redirects=False, timeout=10) as browser:
        callback = _login_at_provider(browser, upstream, "p.durand")
    assert parse_qs(urlsplit(callback).query)["iss"] == [provider.url]
    back = _back_to_a(federated, callback)
    code = code_from(back, "retour-a")
    tokens = exchange(federated, code, auth.verifier).json()
    principal = app_platform(federated).tokens.verify(tokens["access_token"])  # type: ignore[union-attr]
    assert principal.subject == local_id
    assert principal.auth_methods == {"fed"}
    assert ("login", local_id, "success:fed") in audit_actions(app_platform(federated))

    replay = _back_to_a(federated, callback)
    assert replay.status_code == 400


def test_unknown_person_at_the_provider_gets_no_account(
    federated: TestClient[Any], provider: Provider
) -> None:
    make_user(provider.platform, "inconnu", "pharmacien_adjoint", rpps_number=rpps(999))
    auth = start(federated)
    upstream = _to_provider(federated, auth)
    with httpx.Client(base_url=provider.url, follow_redirects=False, timeout=10) as browser:
        callback = _login_at_provider(browser, upstream, "inconnu")
    refused = _back_to_a(federated, callback)
    assert refused.status_code == 403
    assert "Aucun compte Hygie" in refused.text
    assert "location" not in refused.headers


def test_forged_or_refused_answers_from_the_provider(
    federated: TestClient[Any], provider: Provider
) -> None:
    auth = start(federated)
    upstream = _to_provider(federated, auth)
    state = parse_qs(urlsplit(upstream).query)["state"][0]
    forged = federated.get(
        CALLBACK_PATH, params={"state": "not-the-state", "code": "x"}, follow_redirects=False
    )
    assert forged.status_code == 400
    bad_code = federated.get(
        CALLBACK_PATH, params={"state": state, "code": "forged-code"}, follow_redirects=False
    )
    assert bad_code.status_code == 502
    assert "échoué" in bad_code.text

    auth = start(federated)
    upstream = _to_provider(federated, auth)
    state = parse_qs(urlsplit(upstream).query)["state"][0]
    denied = federated.get(
        CALLBACK_PATH, params={"state": state, "error": "access_denied"}, follow_redirects=False
    )
    assert denied.status_code == 400

    stranger = TestClient(app=federated.app)  # another browser cannot finish this login
    auth = start(federated)
    upstream = _to_provider(federated, auth)
    state = parse_qs(urlsplit(upstream).query)["state"][0]
    assert stranger.get(CALLBACK_PATH, params={"state": state, "code": "x"}).status_code == 400


def test_federation_is_off_unless_configured(client: TestClient[Any]) -> None:
    auth = start(client)
    assert "Se connecter avec" not in auth.page.text
    response = client.get("/oauth/federation/start", params={"request_id": auth.request_id})
    assert response.status_code == 404
    assert client.get(CALLBACK_PATH, params={"state": "x", "code": "y"}).status_code == 400
