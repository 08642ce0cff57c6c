"""Brute force: failed logins lock the account (and the client address) with growing delays;
a correct password during the lock is refused; the lock ends as configured."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.config import Settings
from appliance.platform import Platform
from appliance.tasks import record_heartbeat
from services.identity.accounts import CLI_ACTOR, Accounts, Actor
from tests.identity_support import (
    PASSWORD,
    accounts_of,
    app_platform,
    audit_actions,
    code_from,
    make_user,
    start,
    submit,
)

FAST_LOCKOUT = {
    "lockout_threshold": 5,
    "lockout_address_threshold": 1000,
    "lockout_base_delay_s": 1.0,
    "lockout_max_delay_s": 2.0,
}


@pytest.fixture
def fast_client(settings: Settings) -> Iterator[TestClient[Any]]:
    app = create_app(settings.model_copy(update=FAST_LOCKOUT))
    with TestClient(app=app) as test_client:
        record_heartbeat(app.state.platform.store, "test-worker")
        yield test_client


def test_fifty_wrong_passwords_lock_the_account_until_the_delay_ends(
    fast_client: TestClient[Any],
) -> None:
    platform = app_platform(fast_client)
    user_id = make_user(platform, "victime", "pharmacien_adjoint")
    auth = start(fast_client)
    statuses = [
        submit(fast_client, auth, username="victime", password=f"Essai-{n:03d}-faux").status_code
        for n in range(50)
    ]
    assert statuses[:4] == [400] * 4
    assert set(statuses[4:]) == {429}, statuses

    during = submit(fast_client, auth, username="victime", password=PASSWORD)
    assert during.status_code == 429, "a correct password during the lock is refused"
    assert "location" not in during.headers
    retry_after = int(during.headers["retry-after"])
    assert 1 <= retry_after <= 2  # at most the 2 s maximum delay, rounded up
    assert "essais infructueux" in during.text

    time.sleep(retry_after + 0.05)
    after = submit(fast_client, auth, username="victime", password=PASSWORD)
    code_from(after, auth.state)

    actions = audit_actions(platform)
    assert any(action == "lockout" and obj == user_id for action, obj, _ in actions)
    assert sum(1 for a, o, r in actions if a == "login" and o == user_id and r == "locked") >= 45
    assert ("login", user_id, "success:pwd") in actions


def test_unknown_logins_lock_too(fast_client: TestClient[Any]) -> None:
    """Locking only existing accounts would tell an attacker which logins exist."""
    auth = start(fast_client)
    statuses = [
        submit(fast_client, auth, username="inconnu", password="Rien-A-Voir-1").status_code
        for _ in range(6)
    ]
    assert statuses == [400, 400, 400, 400, 429, 429]


def test_spraying_many_accounts_from_one_address_locks_the_address(settings: Settings) -> None:
    update = {**FAST_LOCKOUT, "lockout_address_threshold": 8}
    app = create_app(settings.model_copy(update=update))
    with TestClient(app=app) as test_client:
        platform = app_platform(test_client)
        make_user(platform, "titulaire", "pharmacien_titulaire")
        auth = start(test_client)
        for n in range(8):
            submit(test_client, auth, username=f"compte{n}", password="Printemps-2024!")
        refused = submit(test_client, auth, username="titulaire", password=PASSWORD)
        assert refused.status_code == 429
        assert any(
            action == "lockout" and obj == "unknown" for action, obj, _ in audit_actions(platform)
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _accounts(platform: Platform, clock: Clock, **update: Any) -> Accounts:
    settings = platform.settings.model_copy(
        update={
            "lockout_threshold": 3,
            "lockout_address_threshold": 100,
            "lockout_base_delay_s": 30.0,
            "lockout_max_delay_s": 300.0,
            **update,
        }
    )
    return Accounts(settings, platform.store, platform.audit, clock=clock)


def test_delays_grow_per_account_whatever_the_address(platform: Platform) -> None:
    clock = Clock()
    accounts = _accounts(platform, clock)
    make_user(platform, "cible", "preparateur")
    waits = []
    for n in range(6):
        actor = Actor(actor="anonymous", role="anonymous", client_addr=f"192.0.2.{n + 1}")
        result = accounts.login_password("cible", "Mauvais-Mot-1", actor)
        waits.append((result.outcome, result.retry_after_s))
        clock.now += result.retry_after_s  # wait exactly until the lock ends
    assert waits == [
        ("failure", 0),
        ("failure", 0),
        ("failure", 30),
        ("failure", 60),
        ("failure", 120),
        ("failure", 240),
    ]
    actor = Actor(actor="anonymous", role="anonymous", client_addr="198.51.100.7")
    assert accounts.login_password("cible", PASSWORD, actor).outcome == "success"
    assert accounts.login_password("cible", "Mauvais-Mot-1", actor).retry_after_s == 0


def test_lock_is_refused_without_checking_the_password_and_admin_can_unlock(
    platform: Platform,
) -> None:
    clock = Clock()
    accounts = _accounts(platform, clock)
    user_id = make_user(platform, "bloque", "preparateur")
    actor = Actor(actor="anonymous", role="anonymous", client_addr="192.0.2.1")
    for _ in range(3):
        accounts.login_password("bloque", "Mauvais-Mot-1", actor)
    assert accounts.locked_for(user_id) == 30
    result = accounts.login_password("bloque", PASSWORD, actor)
    assert (result.outcome, result.retry_after_s) == ("locked", 30)
    accounts.unlock(user_id, CLI_ACTOR)
    assert accounts.login_password("bloque", PASSWORD, actor).outcome == "success"
    assert ("unlock", user_id, "success") in audit_actions(platform)


def test_failures_are_forgotten_after_the_reset_period(platform: Platform) -> None:
    clock = Clock()
    accounts = _accounts(platform, clock, lockout_reset_after_s=600.0)
    make_user(platform, "oublie", "preparateur")
    actor = Actor(actor="anonymous", role="anonymous", client_addr="192.0.2.1")
    for _ in range(2):
        accounts.login_password("oublie", "Mauvais-Mot-1", actor)
    clock.now += 601
    assert accounts.login_password("oublie", "Mauvais-Mot-1", actor).retry_after_s == 0
    assert accounts_of(platform).by_username("oublie") is not None
