"""Accounts through the API: creation with the password policy and RPPS rules, versions,
role changes that end sessions, the rule that only staff managers hand out patient data,
self service, and bad input answered 4xx."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from services.identity.roles import Role, role_scopes
from tests.identity_support import (
    PASSWORD,
    app_platform,
    audit_actions,
    bearer,
    login,
    make_user,
    refresh,
    rpps,
    shared_client,
)

USERS = "/api/identity/users"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    with shared_client(tmp_path_factory.mktemp("users")) as test_client:
        yield test_client


def new_user(**overrides: Any) -> dict[str, Any]:
    body = {
        "username": "sophie",
        "display_name": "Sophie Leroy",
        "role": "preparateur",
        "password": PASSWORD,
    }
    body.update(overrides)
    return body


def test_titulaire_creates_and_changes_staff_accounts(
    client: TestClient[Any], role_token: Callable[..., str]
) -> None:
    headers = bearer(role_token("pharmacien_titulaire", subject="u-00000000000000aa"))
    created = client.post(USERS, json=new_user(), headers=headers)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["role"] == "preparateur"
    assert user["version"] == 1
    assert "password" not in created.text.lower().replace("password_", "")
    user_id = user["user_id"]

    tokens = login(client, "sophie")
    assert client.get("/api/identity/me", headers=bearer(tokens["access_token"])).status_code == 200

    promoted = client.put(
        f"{USERS}/{user_id}",
        json={
            "expected_version": 1,
            "display_name": "Sophie Leroy",
            "role": "pharmacien_adjoint",
            "rpps": rpps(31),
        },
        headers=headers,
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["version"] == 2
    # the role changed: the old tokens and the session are gone
    assert client.get("/api/identity/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert refresh(client, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    fresh = login(client, "sophie")
    assert "documents:sign" in fresh["scope"]

    history = client.get(f"{USERS}/{user_id}/history", headers=headers).json()
    assert [(h["version"], h["role"]) for h in history] == [
        (1, "preparateur"),
        (2, "pharmacien_adjoint"),
    ]
    assert history[1]["recorded_by"] == "u-00000000000000aa"
    stale = client.put(
        f"{USERS}/{user_id}",
        json={"expected_version": 1, "display_name": "X", "role": "preparateur"},
        headers=headers,
    )
    assert stale.status_code == 409
    actions = audit_actions(app_platform(client))
    assert ("role_change", user_id, "pharmacien_adjoint") in actions
    assert ("user_create", user_id, "success") in actions


def test_technical_admin_cannot_hand_out_patient_data(
    client: TestClient[Any], role_token: Callable[..., str]
) -> None:
    admin = bearer(role_token("admin_technique"))
    refused = client.post(USERS, json=new_user(), headers=admin)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("forbidden-role")
    assert "staff:manage" in refused.json()["detail"]
    ok = client.post(
        USERS,
        json=new_user(username="it2", role="admin_technique", display_name="Support"),
        headers=admin,
    )
    assert ok.status_code == 201, ok.text
    it_id = ok.json()["user_id"]
    promote = client.put(
        f"{USERS}/{it_id}",
        json={
            "expected_version": 1,
            "display_name": "Support",
            "role": "pharmacien_titulaire",
            "rpps": rpps(5),
        },
        headers=admin,
    )
    assert promote.status_code == 403
    staff_id = make_user(app_platform(client), "victor", "pharmacien_adjoint")
    reset = client.post(
        f"{USERS}/{staff_id}/password", json={"password": "Nouveau-Passe-9!"}, headers=admin
    )
    assert reset.status_code == 403
    # but the administrator may unlock anyone and list accounts
    assert client.post(f"{USERS}/{staff_id}/unlock", headers=admin).status_code == 204
    listed = client.get(USERS, headers=admin).json()
    assert {u["username"] for u in listed} >= {"it2", "victor"}


def test_nobody_changes_their_own_role(
    client: TestClient[Any], role_token: Callable[..., str]
) -> None:
    titulaire_id = make_user(app_platform(client), "chef", "pharmacien_titulaire")
    headers = bearer(role_token("pharmacien_titulaire", subject=titulaire_id))
    me = client.get(f"{USERS}/{titulaire_id}", headers=headers).json()
    response = client.put(
        f"{USERS}/{titulaire_id}",
        json={
            "expected_version": me["version"],
            "display_name": me["display_name"],
            "role": "admin_technique",
        },
        headers=headers,
    )
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (new_user(password="court"), 400, "weak-password"),
        (new_user(password="Sophie-Leroy-2024"), 400, "weak-password"),
        (new_user(role="pharmacien_adjoint"), 400, "invalid-rpps"),
        (new_user(role="pharmacien_adjoint", rpps="12345678901"), 400, "invalid-rpps"),
        (new_user(role="admin_technique", rpps=rpps(9)), 400, "invalid-rpps"),
        (new_user(username="Sophie"), 400, "validation"),
        (new_user(role="root"), 400, "validation"),
        (new_user(colour="red"), 400, "validation"),
        ({"username": "x"}, 400, "validation"),
    ],
)
def test_bad_accounts_are_refused(
    shared: TestClient[Any], body: dict[str, Any], status: int, kind: str
) -> None:
    tokens = app_platform(shared).tokens
    assert tokens is not None
    token = tokens.issue(
        subject="u-00000000000000aa",
        role="pharmacien_titulaire",
        scopes=role_scopes(Role.PHARMACIEN_TITULAIRE),
    )
    response = shared.post(USERS, json=body, headers=bearer(token))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith(kind)


def test_duplicate_login_or_rpps_is_a_conflict(
    client: TestClient[Any], role_token: Callable[..., str]
) -> None:
    headers = bearer(role_token("pharmacien_titulaire"))
    number = rpps(77)
    first = new_user(username="a1", role="pharmacien_adjoint", rpps=number)
    assert client.post(USERS, json=first, headers=headers).status_code == 201
    assert client.post(USERS, json={**first, "rpps": rpps(78)}, headers=headers).status_code == 409
    assert client.post(USERS, json={**first, "username": "a2"}, headers=headers).status_code == 409


def test_path_ids_are_validated(client: TestClient[Any], role_token: Callable[..., str]) -> None:
    headers = bearer(role_token("pharmacien_titulaire"))
    assert client.get(f"{USERS}/not-an-id", headers=headers).status_code == 400
    assert client.get(f"{USERS}/u-0000000000000000", headers=headers).status_code == 404


def test_self_service_password_and_logout(client: TestClient[Any]) -> None:
    make_user(app_platform(client), "gael", "etudiant")
    tokens = login(client, "gael")
    headers = bearer(tokens["access_token"])
    wrong = client.put(
        "/api/identity/me/password",
        json={"current_password": "Pas-Le-Bon-12", "new_password": "Nouveau-Passe-9!"},
        headers=headers,
    )
    assert wrong.status_code == 403
    weak = client.put(
        "/api/identity/me/password",
        json={"current_password": PASSWORD, "new_password": "faible"},
        headers=headers,
    )
    assert weak.status_code == 400
    other_terminal = login(client, "gael")
    changed = client.put(
        "/api/identity/me/password",
        json={"current_password": PASSWORD, "new_password": "Nouveau-Passe-9!"},
        headers=headers,
    )
    assert changed.status_code == 204
    # the other session ended, this one goes on
    assert refresh(client, other_terminal["refresh_token"]).json()["error"] == "invalid_grant"
    assert client.get("/api/identity/me", headers=headers).status_code == 200
    login(client, "gael", "Nouveau-Passe-9!")
    out = client.post("/api/identity/me/logout", headers=headers)
    assert out.status_code == 200
    assert out.json()["families"] == 2
    assert client.get("/api/identity/me", headers=headers).status_code == 401


def test_revoke_sessions_of_someone_else(
    client: TestClient[Any], role_token: Callable[..., str]
) -> None:
    user_id = make_user(app_platform(client), "kevin", "preparateur")
    tokens = login(client, "kevin")
    response = client.post(
        f"{USERS}/{user_id}/revoke-sessions", headers=bearer(role_token("pharmacien_titulaire"))
    )
    assert response.json() == {"families": 1}
    assert client.get("/api/identity/me", headers=bearer(tokens["access_token"])).status_code == 401


def test_role_table_and_clients_api(
    client: TestClient[Any], role_token: Callable[..., str]
) -> None:
    roles = client.get("/api/identity/roles", headers=bearer(role_token("preparateur"))).json()
    assert {r["role"] for r in roles} >= {"pharmacien_titulaire", "client_machine"}
    admin = bearer(role_token("admin_technique"))
    created = client.post(
        "/api/identity/clients",
        json={
            "client_id": "robot",
            "name": "Robot",
            "kind": "confidential",
            "scopes": ["billing:write"],
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    secret = created.json()["client_secret"]
    assert secret
    listed = client.get("/api/identity/clients", headers=admin)
    assert secret not in listed.text
    assert [c["client_id"] for c in listed.json()] == ["robot"]
    for bad in (
        {"client_id": "r2", "name": "R", "kind": "confidential", "scopes": ["admin:users"]},
        {"client_id": "r3", "name": "R", "kind": "public"},
        {
            "client_id": "r4",
            "name": "R",
            "kind": "public",
            "redirect_uris": ["http://evil.example/cb"],
        },
        {
            "client_id": "hygie-web",
            "name": "R",
            "kind": "public",
            "redirect_uris": ["https://a.example/cb"],
        },
        {"client_id": "robot", "name": "R", "kind": "confidential"},
    ):
        response = client.post("/api/identity/clients", json=bad, headers=admin)
        assert response.status_code in (400, 409), (bad, response.text)
