"""The OAuth 2.0 / OpenID Connect provider end to end, through HTTP: discovery, the
authorization code flow with PKCE as the web UI runs it, client credentials, the quick user
switch by PIN, the CPS extension point, rate limits and the audit trail."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.config import Settings
from appliance.tasks import record_heartbeat
from services.identity.accounts import CLI_ACTOR
from services.identity.api import create_client
from services.identity.cards import register_card_authenticator
from services.identity.models import ClientCreate
from services.identity.roles import Role, role_scopes
from tests.identity_support import (
    PASSWORD,
    WEB,
    WEB_REDIRECT,
    accounts_of,
    app_platform,
    audit_actions,
    bearer,
    code_from,
    exchange,
    login,
    make_user,
    refresh,
    rpps,
    shared_client,
    start,
    submit,
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    """One appliance for the tests that only read or use their own accounts."""
    with shared_client(tmp_path_factory.mktemp("oauth")) as test_client:
        yield test_client


def make_client(settings: Settings, **overrides: Any) -> Iterator[TestClient[Any]]:
    app = create_app(settings.model_copy(update=overrides))
    with TestClient(app=app) as test_client:
        record_heartbeat(app.state.platform.store, "test-worker")
        yield test_client


# --- discovery --------------------------------------------------------------------------------


def test_discovery_document_and_keys(shared: TestClient[Any]) -> None:
    client = shared
    doc = client.get("/.well-known/openid-configuration").json()
    issuer = doc["issuer"]
    assert issuer == "http://127.0.0.1:8000"
    for member in ("authorization_endpoint", "token_endpoint", "jwks_uri", "revocation_endpoint"):
        assert doc[member].startswith(issuer + "/oauth/")
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert set(doc["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "client_credentials",
    }
    jwks = client.get("/oauth/jwks").json()
    assert jwks["keys"]
    assert all("d" not in key for key in jwks["keys"])
    assert all(key["kid"] and key["alg"] == "Ed25519" for key in jwks["keys"])


# --- authorization code flow ------------------------------------------------------------------


def test_code_flow_for_the_web_ui(client: TestClient[Any]) -> None:
    user_id = make_user(app_platform(client), "marie", "pharmacien_adjoint")
    auth = start(client, state="xyz-789", nonce="n-0S6_WzA2Mj")
    page = auth.page
    assert "Connexion à Hygie" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"

    response = submit(client, auth, username="Marie", password=PASSWORD)
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == WEB_REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["xyz-789"]
    assert query["iss"] == ["http://127.0.0.1:8000"]
    token_response = exchange(client, query["code"][0], auth.verifier)
    assert token_response.status_code == 200, token_response.text
    assert token_response.headers["cache-control"] == "no-store"
    tokens = token_response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 300
    assert set(tokens["scope"].split()) == role_scopes(Role.PHARMACIEN_ADJOINT)

    keys = KeySet.import_key_set(client.get("/oauth/jwks").json())
    id_token = jwt.decode(tokens["id_token"], keys, algorithms=["Ed25519"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": "http://127.0.0.1:8000"},
        aud={"essential": True, "value": WEB},
        nonce={"essential": True, "value": "n-0S6_WzA2Mj"},
    ).validate(id_token.claims)
    assert id_token.claims["sub"] == user_id
    assert id_token.claims["amr"] == ["pwd"]
    assert id_token.claims["preferred_username"] == "marie"
    assert "rpps" in id_token.claims

    me = client.get("/api/identity/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == "marie"
    info = client.get("/oauth/userinfo", headers=bearer(tokens["access_token"])).json()
    assert info["sub"] == user_id
    assert info["name"] == "Agent marie"


def test_scopes_are_what_was_asked_within_the_role(client: TestClient[Any]) -> None:
    make_user(app_platform(client), "paul", "preparateur")
    tokens = login(client, "paul", scope="openid patients:read documents:sign")
    assert tokens["scope"] == "openid patients:read"
    assert "id_token" in tokens
    no_openid = login(client, "paul", scope="patients:read")
    assert "id_token" not in no_openid
    userinfo = client.get("/oauth/userinfo", headers=bearer(no_openid["access_token"]))
    assert userinfo.status_code == 403


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "openid patients:delete"}, "invalid_scope"),
        ({"prompt": "none"}, "login_required"),
    ],
)
def test_bad_requests_go_back_to_the_client_with_state(
    shared: TestClient[Any], change: dict[str, str | None], error: str
) -> None:
    client = shared
    params = {
        "response_type": "code",
        "client_id": WEB,
        "redirect_uri": WEB_REDIRECT,
        "state": "keep-me",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    params.update(change)  # type: ignore[arg-type]
    query = {k: v for k, v in params.items() if v is not None}
    response = client.get("/oauth/authorize", params=query, follow_redirects=False)
    assert response.status_code == 303
    back = parse_qs(urlsplit(response.headers["location"]).query)
    assert back["error"] == [error]
    assert back["state"] == ["keep-me"]


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "unknown-client"},
        {"redirect_uri": "https://evil.example/cb"},
        {"redirect_uri": WEB_REDIRECT + "/"},
        {"redirect_uri": WEB_REDIRECT + "?x=1"},
        {"client_id": "x" * 5000},
    ],
)
def test_unknown_client_or_redirect_uri_is_never_redirected_to(
    shared: TestClient[Any], change: dict[str, str]
) -> None:
    client = shared
    params = {
        "response_type": "code",
        "client_id": WEB,
        "redirect_uri": WEB_REDIRECT,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        **change,
    }
    response = client.get("/oauth/authorize", params=params, follow_redirects=False)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "Connexion impossible" in response.text


def test_code_is_single_use_and_replay_revokes_what_it_gave(client: TestClient[Any]) -> None:
    make_user(app_platform(client), "jeanne", "etudiant")
    auth = start(client)
    code = code_from(submit(client, auth, username="jeanne", password=PASSWORD))
    first = exchange(client, code, auth.verifier)
    assert first.status_code == 200
    again = exchange(client, code, auth.verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert (
        client.get("/api/identity/me", headers=bearer(first.json()["access_token"])).status_code
        == 401
    )


@pytest.mark.parametrize("problem", ["verifier", "no-verifier", "redirect", "client", "expired"])
def test_code_exchange_checks(shared: TestClient[Any], problem: str) -> None:
    client = shared
    platform = app_platform(client)
    make_user(platform, f"alain-{problem}", "preparateur")
    auth = start(client)
    code = code_from(submit(client, auth, username=f"alain-{problem}", password=PASSWORD))
    extra: dict[str, Any] = {}
    verifier = auth.verifier
    if problem == "verifier":
        verifier = verifier[:-2] + "zz"
    elif problem == "no-verifier":
        verifier = ""
    elif problem == "redirect":
        extra["redirect_uri"] = "http://127.0.0.1:8000/ui/other"
    elif problem == "client":
        extra["client_id"] = "not-a-client"
    elif problem == "expired":
        with platform.store.write() as db:
            db.execute("UPDATE oauth_codes SET expires_at = 0 WHERE used_at IS NULL")
    response = exchange(client, code, verifier, **extra)
    assert response.status_code in (400, 401)
    assert response.json()["error"] in ("invalid_grant", "invalid_client")
    # the code is still unusable afterwards only when it was consumed; either way no tokens
    assert "access_token" not in response.json()


def test_login_request_is_bound_to_the_browser_that_opened_it(
    client: TestClient[Any], settings: Settings
) -> None:
    make_user(app_platform(client), "rose", "preparateur")
    auth = start(client)
    stranger = TestClient(app=client.app)
    response = stranger.post(
        "/oauth/authorize",
        data={"request_id": auth.request_id, "username": "rose", "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "expiré" in response.text
    assert "location" not in response.headers


def test_wrong_password_and_suspended_account(client: TestClient[Any]) -> None:
    platform = app_platform(client)
    user_id = make_user(platform, "yves", "preparateur")
    auth = start(client)
    wrong = submit(client, auth, username="yves", password="Pas-Le-Bon-1!")
    assert wrong.status_code == 400
    assert "Identifiant ou mot de passe incorrect" in wrong.text
    unknown = submit(client, auth, username="personne", password=PASSWORD)
    assert unknown.status_code == 400
    assert unknown.text.count("incorrect") == wrong.text.count("incorrect")

    accounts = accounts_of(platform)
    item = accounts.get(user_id)
    from services.identity.models import UserUpdate

    accounts.update(
        user_id,
        UserUpdate(
            expected_version=item.version,
            display_name="Yves",
            role=Role.PREPARATEUR,
            status="suspended",
        ),
        CLI_ACTOR,
    )
    suspended = submit(client, auth, username="yves", password=PASSWORD)
    assert suspended.status_code == 403
    assert "suspendu" in suspended.text


# --- token endpoint ---------------------------------------------------------------------------


def test_refresh_rotates_and_keeps_scopes(client: TestClient[Any]) -> None:
    make_user(app_platform(client), "nina", "pharmacien_adjoint")
    tokens = login(client, "nina", scope="openid patients:read patients:write")
    narrowed = client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": WEB,
            "scope": "patients:read",
        },
    )
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "patients:read"
    wider = client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": narrowed.json()["refresh_token"],
            "client_id": WEB,
            "scope": "patients:read documents:sign",
        },
    )
    assert wider.json()["error"] == "invalid_scope"


def test_client_credentials_for_an_integration(client: TestClient[Any]) -> None:
    platform = app_platform(client)
    _saved, secret = create_client(
        accounts_of(platform),
        ClientCreate(
            client_id="lgo-sync",
            name="Synchronisation LGO",
            kind="confidential",
            scopes=("patients:read",),
        ),
        CLI_ACTOR,
    )
    assert secret
    import base64

    basic = base64.b64encode(f"lgo-sync:{secret}".encode()).decode()
    response = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "patients:read"
    assert "refresh_token" not in body
    principal = platform.tokens.verify(body["access_token"])  # type: ignore[union-attr]
    assert principal.role == "client_machine"
    assert principal.subject == "lgo-sync"
    assert client.get("/api/identity/me", headers=bearer(body["access_token"])).status_code == 403

    posted = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "lgo-sync",
            "client_secret": secret,
            "scope": "patients:write",
        },
    )
    assert posted.json()["error"] == "invalid_scope"
    wrong = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "lgo-sync", "client_secret": "x"},
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    public = client.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": WEB}
    )
    assert public.json()["error"] == "unauthorized_client"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"data": {}}, "invalid_request"),
        ({"data": {"grant_type": "password", "client_id": WEB}}, "unsupported_grant_type"),
        ({"data": {"grant_type": "authorization_code", "client_id": WEB}}, "invalid_request"),
        ({"data": {"grant_type": "refresh_token", "client_id": WEB}}, "invalid_request"),
        (
            {"data": {"grant_type": "refresh_token", "refresh_token": "x", "client_id": WEB}},
            "invalid_grant",
        ),
        (
            {
                "data": {
                    "grant_type": "authorization_code",
                    "code": "x",
                    "redirect_uri": WEB_REDIRECT,
                }
            },
            "invalid_client",
        ),
        ({"json": {"grant_type": "client_credentials"}}, "invalid_request"),
        (
            {
                "content": b"grant_type=a&grant_type=b",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            "invalid_request",
        ),
        (
            {
                "content": b"\xff\xfe",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            "invalid_request",
        ),
        (
            {
                "data": {"grant_type": "client_credentials"},
                "headers": {"Authorization": "Basic !!!"},
            },
            "invalid_client",
        ),
        (
            {
                "data": {"grant_type": "client_credentials"},
                "headers": {"Authorization": "Bearer x"},
            },
            "invalid_client",
        ),
    ],
)
def test_token_endpoint_errors_are_rfc6749_json(
    shared: TestClient[Any], kwargs: dict[str, Any], error: str
) -> None:
    response = shared.post("/oauth/token", **kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == error


# --- quick user switch by PIN -----------------------------------------------------------------


def test_quick_switch_by_pin_on_the_same_terminal(client: TestClient[Any]) -> None:
    platform = app_platform(client)
    anne = make_user(platform, "anne", "pharmacien_adjoint", display_name="Anne Martin")
    make_user(platform, "bruno", "preparateur", display_name="Bruno Petit")
    anne_tokens = login(client, "anne")
    set_pin = client.put(
        "/api/identity/me/pin",
        json={"current_password": PASSWORD, "pin": "2580"},
        headers=bearer(anne_tokens["access_token"]),
    )
    assert set_pin.status_code == 204, set_pin.text
    assert (
        client.put(
            "/api/identity/me/pin",
            json={"current_password": PASSWORD, "pin": "1234"},
            headers=bearer(anne_tokens["access_token"]),
        )
        .json()["type"]
        .endswith("weak-pin")
    )
    login(client, "bruno")  # Bruno takes the counter

    auth = start(client)
    assert "Anne Martin" in auth.page.text
    assert "Bruno Petit" not in auth.page.text  # no PIN set
    switched = client.post(
        "/oauth/authorize",
        data={"request_id": auth.request_id, "method": "pin", "user_id": anne, "pin": "2580"},
        follow_redirects=False,
    )
    tokens = exchange(client, code_from(switched), auth.verifier).json()
    principal = platform.tokens.verify(tokens["access_token"])  # type: ignore[union-attr]
    assert principal.subject == anne
    assert principal.auth_methods == {"pin"}

    # another terminal (another browser) never offers Anne's PIN
    other = TestClient(app=client.app)
    assert "Anne Martin" not in start(other).page.text

    # three wrong PINs: the quick switch is off until Anne types her password again
    for _ in range(3):
        auth = start(client)
        bad = client.post(
            "/oauth/authorize",
            data={"request_id": auth.request_id, "method": "pin", "user_id": anne, "pin": "9999"},
            follow_redirects=False,
        )
        assert bad.status_code == 400
    auth = start(client)
    assert "Anne Martin" not in auth.page.text
    actions = audit_actions(platform)
    assert ("lockout", anne, "pin_disabled") in actions


def test_pin_switch_expires_at_midnight(client: TestClient[Any]) -> None:
    platform = app_platform(client)
    anne = make_user(platform, "anne", "pharmacien_adjoint", display_name="Anne Martin")
    tokens = login(client, "anne")
    client.put(
        "/api/identity/me/pin",
        json={"current_password": PASSWORD, "pin": "2580"},
        headers=bearer(tokens["access_token"]),
    )
    assert "Anne Martin" in start(client).page.text
    with platform.store.write() as db:
        db.execute(
            "UPDATE identity_terminal_logins SET logged_in_at = ?", [time.time() - 86_400 * 1.5]
        )
    auth = start(client)
    assert "Anne Martin" not in auth.page.text
    late = client.post(
        "/oauth/authorize",
        data={"request_id": auth.request_id, "method": "pin", "user_id": anne, "pin": "2580"},
        follow_redirects=False,
    )
    assert late.status_code == 400
    assert "mot de passe" in late.text


# --- CPS card extension point -----------------------------------------------------------------


class FakeCardReader:
    def __init__(self, number: str | None) -> None:
        self.number = number
        self.terminals: list[str] = []

    def authenticate(self, terminal: str) -> str | None:
        self.terminals.append(terminal)
        return self.number


def test_cps_login_through_the_extension_point(client: TestClient[Any]) -> None:
    platform = app_platform(client)
    number = rpps(777)
    user_id = make_user(platform, "claire", "pharmacien_titulaire", rpps_number=number)
    auth = start(client)
    assert "carte CPS" not in auth.page.text
    refused = submit(client, auth, method="cps")
    assert refused.status_code == 400
    reader = FakeCardReader(number)
    register_card_authenticator(reader)
    try:
        auth = start(client)
        assert "carte CPS" in auth.page.text
        tokens = exchange(client, code_from(submit(client, auth, method="cps")), auth.verifier)
        principal = platform.tokens.verify(tokens.json()["access_token"])  # type: ignore[union-attr]
        assert principal.subject == user_id
        assert principal.auth_methods == {"cps"}
        assert reader.terminals
        reader.number = rpps(778)
        auth = start(client)
        assert submit(client, auth, method="cps").status_code == 403
    finally:
        register_card_authenticator(None)


# --- audit and rate limits --------------------------------------------------------------------


def test_logins_and_tokens_are_audited_without_secrets(client: TestClient[Any]) -> None:
    platform = app_platform(client)
    user_id = make_user(platform, "odile", "preparateur")
    auth = start(client)
    submit(client, auth, username="odile", password="Mauvais-Passe-1")
    tokens = login(client, "odile")
    refreshed = refresh(client, tokens["refresh_token"]).json()
    refresh(client, tokens["refresh_token"])  # reuse
    client.post("/oauth/revoke", data={"token": refreshed["refresh_token"], "client_id": WEB})
    actions = audit_actions(platform)
    kinds = {(action, outcome.split(":")[0]) for action, _, outcome in actions}
    for expected in [
        ("user_create", "success"),
        ("role_change", "preparateur"),
        ("login", "failure"),
        ("login", "success"),
        ("token_issue", "success"),
        ("token_refresh", "success"),
        ("token_reuse", "family_revoked"),
        ("token_revoke", "success"),
    ]:
        assert expected in kinds, expected
    assert ("login", user_id, "success:pwd") in actions
    dump = json.dumps([list(entry) for entry in actions])
    for secret in ("odile", PASSWORD, tokens["refresh_token"], tokens["access_token"][:40]):
        assert secret not in dump


def test_token_endpoint_is_rate_limited_with_retry_after(settings: Settings) -> None:
    for test_client in make_client(
        settings, rate_limit_auth_per_client=3, rate_limit_per_client=50, rate_limit_window_s=60.0
    ):
        codes = [
            test_client.post("/oauth/token", data={"grant_type": "x"}).status_code for _ in range(4)
        ]
        assert codes == [400, 400, 400, 429]
        limited = test_client.post("/oauth/token", data={"grant_type": "x"})
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert limited.json()["type"].endswith("rate-limited")
        # other routes still answer until the global limit is reached
        assert test_client.get("/api/workstations").status_code == 401
        statuses = {test_client.get("/api/workstations").status_code for _ in range(60)}
        assert 429 in statuses
        assert test_client.get("/health/live").status_code == 200


def test_rate_limit_can_be_switched_off(settings: Settings) -> None:
    for test_client in make_client(
        settings, rate_limit_enabled=False, rate_limit_auth_per_client=1
    ):
        assert {test_client.post("/oauth/token", data={}).status_code for _ in range(5)} == {400}
