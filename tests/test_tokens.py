"""Access tokens: every way a token can be wrong is refused, and revocation takes effect.

Expired, not yet valid, wrong signature, wrong audience or issuer, ``alg=none`` and other
algorithm tricks, missing or unknown ``kid``, an ID token used as an access token; then over
HTTP: a revoked token, and a reused refresh token that revokes its whole family.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, OKPKey
from litestar.testing import TestClient

from appliance.config import Settings
from appliance.keys import JWT_SIGNING_KEYS, new_jwt_key_set
from appliance.platform import Platform, load_token_service
from appliance.security import InvalidTokenError, TokenService
from appliance.security.keyring import rotate_jwt_keys
from appliance.security.revocation import revoke_subject, revoke_token
from appliance.security.tokens import AUDIENCE
from tests.identity_support import app_platform, bearer, login, make_user, refresh

ISSUER = "https://hygie.test"


@pytest.fixture
def keys() -> dict[str, Any]:
    return dict(json.loads(new_jwt_key_set())["keys"][0])


@pytest.fixture
def service(keys: dict[str, Any]) -> TokenService:
    return TokenService.from_jwks_json(json.dumps({"keys": [keys]}).encode(), issuer=ISSUER)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-0000000000000001",
        "role": "pharmacien_adjoint",
        "scope": "patients:read",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "jti-1",
    }
    base.update(overrides)
    return base


def sign(key: dict[str, Any], body: dict[str, Any], **header: Any) -> str:
    private = OKPKey.import_key(key)
    head = {"alg": "Ed25519", "kid": key["kid"], "typ": "at+jwt", **header}
    return jwt.encode(head, body, private, algorithms=["Ed25519"])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_good_token_verifies(service: TokenService) -> None:
    token = service.issue(subject="u-1", role="preparateur", scopes=["patients:read"])
    principal = service.verify(token)
    assert principal.subject == "u-1"
    assert principal.scopes == {"patients:read"}
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "Ed25519", "kid": service.signing_kid, "typ": "at+jwt"}


def test_expired(service: TokenService) -> None:
    token = service.issue(subject="u", role="r", scopes=[], ttl_s=60, now=time.time() - 3600)
    with pytest.raises(InvalidTokenError):
        service.verify(token)


def test_not_yet_valid(service: TokenService, keys: dict[str, Any]) -> None:
    later = int(time.time()) + 3600
    token = sign(keys, claims(nbf=later, iat=int(time.time()), exp=later + 300))
    with pytest.raises(InvalidTokenError, match="InvalidClaim"):
        service.verify(token)
    issued_in_future = service.issue(subject="u", role="r", scopes=[], now=later)
    with pytest.raises(InvalidTokenError):
        service.verify(issued_in_future)


def test_wrong_signature(service: TokenService, keys: dict[str, Any]) -> None:
    impostor = dict(json.loads(new_jwt_key_set())["keys"][0])
    impostor["kid"] = keys["kid"]  # same key id, different key
    with pytest.raises(InvalidTokenError, match="BadSignature"):
        service.verify(sign(impostor, claims()))
    good = sign(keys, claims())
    head, _body, signature = good.split(".")
    tampered_body = b64(json.dumps(claims(scope="patients:read patients:write")).encode())
    with pytest.raises(InvalidTokenError):
        service.verify(f"{head}.{tampered_body}.{signature}")


@pytest.mark.parametrize(
    "bad",
    [
        {"aud": "another-api"},
        {"aud": "hygie-web"},
        {"iss": "https://evil.example"},
        {"sub": None},
        {"exp": None},
    ],
    ids=["audience", "client-audience", "issuer", "no-subject", "no-expiry"],
)
def test_wrong_claims(service: TokenService, keys: dict[str, Any], bad: dict[str, Any]) -> None:
    body = {k: v for k, v in claims(**bad).items() if v is not None}
    with pytest.raises(InvalidTokenError):
        service.verify(sign(keys, body))


def test_alg_none_is_refused(service: TokenService, keys: dict[str, Any]) -> None:
    header = b64(json.dumps({"alg": "none", "kid": keys["kid"], "typ": "at+jwt"}).encode())
    body = b64(json.dumps(claims()).encode())
    for token in (f"{header}.{body}.", f"{header}.{body}.c2ln"):
        with pytest.raises(InvalidTokenError):
            service.verify(token)


def test_hmac_with_the_public_key_is_refused(service: TokenService, keys: dict[str, Any]) -> None:
    """Algorithm confusion: an HS256 token keyed with the published public key."""
    public = json.dumps(service.public_jwks()["keys"][0]).encode()
    forged = jwt.encode(
        {"alg": "HS256", "kid": keys["kid"], "typ": "at+jwt"},
        claims(),
        OctKey.import_key(public),
        algorithms=["HS256"],
    )
    with pytest.raises(InvalidTokenError):
        service.verify(forged)


def test_missing_or_unknown_kid(service: TokenService, keys: dict[str, Any]) -> None:
    private = OKPKey.import_key(keys)
    no_kid = jwt.encode(
        {"alg": "Ed25519", "typ": "at+jwt"}, claims(), private, algorithms=["Ed25519"]
    )
    with pytest.raises(InvalidTokenError):
        service.verify(no_kid)
    with pytest.raises(InvalidTokenError):
        service.verify(sign(keys, claims(), kid="unknown-kid"))


def test_an_id_token_is_not_an_access_token(service: TokenService, keys: dict[str, Any]) -> None:
    id_token = service.sign_id_token(subject="u-1", audience=AUDIENCE, ttl_s=300)
    with pytest.raises(InvalidTokenError, match="typ"):
        service.verify(id_token)
    with pytest.raises(InvalidTokenError, match="typ"):
        service.verify(sign(keys, claims(), typ="JWT"))


@pytest.mark.parametrize("garbage", ["", "a.b", "a.b.c.d", "%%%.%%%.%%%", "x" * 5000])
def test_garbage_is_refused(service: TokenService, garbage: str) -> None:
    with pytest.raises(InvalidTokenError):
        service.verify(garbage)


def test_rotation_keeps_old_tokens_valid_until_their_key_is_retired(settings: Settings) -> None:
    before = load_token_service(settings)
    old_token = before.issue(subject="u", role="r", scopes=["patients:read"])
    new_kid, dropped = rotate_jwt_keys(settings, keep=2)
    assert dropped == []
    after = load_token_service(settings)
    assert after.signing_kid == new_kid != before.signing_kid
    assert after.verify(old_token).subject == "u"
    assert {key["kid"] for key in after.public_jwks()["keys"]} == {new_kid, before.signing_kid}
    assert all("d" not in key for key in after.public_jwks()["keys"]), "private part published"
    rotate_jwt_keys(settings, keep=2)
    with pytest.raises(InvalidTokenError):
        load_token_service(settings).verify(old_token)
    stored = json.loads((settings.key_path / JWT_SIGNING_KEYS).read_bytes())
    assert len(stored["keys"]) == 2
    with pytest.raises(ValueError, match="keep at least"):
        rotate_jwt_keys(settings, keep=1)


def test_key_set_without_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        TokenService(KeySet([]))


# --- over HTTP: revocation --------------------------------------------------------------------


def test_revoked_token_is_refused(client: TestClient[Any], platform: Platform) -> None:
    assert platform.tokens is not None
    minted = platform.tokens.mint(
        subject="u-x", role="admin_technique", scopes=["workstations:read"]
    )
    assert client.get("/api/workstations", headers=bearer(minted.token)).status_code == 200
    with platform.store.write() as db:
        revoke_token(db, minted.jti, minted.expires_at)
    response = client.get("/api/workstations", headers=bearer(minted.token))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_subject_revocation_refuses_older_tokens_only(
    client: TestClient[Any], platform: Platform
) -> None:
    assert platform.tokens is not None
    now = int(time.time())
    old = platform.tokens.issue(subject="u-y", role="r", scopes=["workstations:read"], now=now - 10)
    with platform.store.write() as db:
        revoke_subject(db, "u-y", now - 5)
    fresh = platform.tokens.issue(subject="u-y", role="r", scopes=["workstations:read"], now=now)
    assert client.get("/api/workstations", headers=bearer(old)).status_code == 401
    assert client.get("/api/workstations", headers=bearer(fresh)).status_code == 200


def test_reused_refresh_token_revokes_the_whole_family(client: TestClient[Any]) -> None:
    make_user(app_platform(client), "lea", "preparateur")
    tokens = login(client, "lea")
    first_refresh, first_access = tokens["refresh_token"], tokens["access_token"]
    rotated = refresh(client, first_refresh)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first_refresh
    me = client.get("/api/identity/me", headers=bearer(second["access_token"]))
    assert me.status_code == 200

    replay = refresh(client, first_refresh)  # a thief replays the consumed token
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    for access in (first_access, second["access_token"]):
        assert client.get("/api/identity/me", headers=bearer(access)).status_code == 401
    legit = refresh(client, second["refresh_token"])
    assert legit.status_code == 400
    assert legit.json()["error"] == "invalid_grant"


def test_revocation_endpoint_ends_a_session(client: TestClient[Any]) -> None:
    make_user(app_platform(client), "hugo", "etudiant")
    tokens = login(client, "hugo")
    headers = bearer(tokens["access_token"])
    assert client.get("/api/identity/me", headers=headers).status_code == 200
    revoked = client.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": "hygie-web"}
    )
    assert revoked.status_code == 200
    assert client.get("/api/identity/me", headers=headers).status_code == 401
    assert refresh(client, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    unknown = client.post("/oauth/revoke", data={"token": "nope", "client_id": "hygie-web"})
    assert unknown.status_code == 200


def test_revoking_an_access_token_alone(client: TestClient[Any]) -> None:
    make_user(app_platform(client), "ines", "etudiant")
    tokens = login(client, "ines")
    response = client.post(
        "/oauth/revoke",
        data={
            "token": tokens["access_token"],
            "client_id": "hygie-web",
            "token_type_hint": "access_token",
        },
    )
    assert response.status_code == 200
    assert client.get("/api/identity/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert refresh(client, tokens["refresh_token"]).status_code == 200


def test_tokens_of_another_issuer_are_refused(
    client: TestClient[Any], token_for: Callable[..., str], settings: Settings
) -> None:
    other = TokenService.from_jwks_json(
        (settings.key_path / JWT_SIGNING_KEYS).read_bytes(), issuer="https://other.example"
    )
    token = other.issue(subject="u", role="r", scopes=["workstations:read"])
    assert client.get("/api/workstations", headers=bearer(token)).status_code == 401
    assert client.get("/api/workstations", headers=bearer(token_for())).status_code == 200
