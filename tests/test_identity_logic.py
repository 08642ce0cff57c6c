"""Pure rules of identity: RPPS numbers, password and PIN policies, lockout delays, PKCE,
scope granting, who may manage whom, the role table, the rate limiter."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.security.ratelimit import TokenBucketLimiter
from services.identity import logic
from services.identity.roles import ALL_SCOPES, ROLES, SCOPES, Role, markdown_table, role_scopes
from tests.identity_support import rpps

ROOT = Path(__file__).resolve().parent.parent


# --- RPPS -------------------------------------------------------------------------------------


def test_rpps_numbers_have_eleven_digits_a_leading_one_and_a_luhn_key() -> None:
    good = rpps(12345678)
    assert logic.rpps_is_valid(good)
    assert len(good) == 11
    assert good[0] == "1"
    wrong_key = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert not logic.rpps_is_valid(wrong_key)
    swapped = good[0] + good[2] + good[1] + good[3:]
    assert good[1] == good[2] or not logic.rpps_is_valid(swapped)
    for bad in ("", "1234567890", "123456789012", "1234567890a", "2" + good[1:], " " + good[1:]):
        assert not logic.rpps_is_valid(bad), bad


def test_luhn_reference_values() -> None:
    assert logic.luhn_valid("79927398713")
    assert not logic.luhn_valid("79927398710")


def test_national_id_of_cps_and_psc_maps_to_rpps() -> None:
    number = rpps(42)
    assert logic.rpps_from_national_id("8" + number) == number
    assert logic.rpps_from_national_id(number) == number
    assert logic.rpps_from_national_id("0" + number) is None
    assert logic.rpps_from_national_id("8" + number[:-1] + "x") is None


@pytest.mark.parametrize(
    ("role", "number", "ok"),
    [
        (Role.PHARMACIEN_TITULAIRE, None, False),
        (Role.PHARMACIEN_ADJOINT, rpps(1), True),
        (Role.PHARMACIEN_ADJOINT, "12345678901", False),
        (Role.PREPARATEUR, None, True),
        (Role.PREPARATEUR, rpps(2), True),
        (Role.ETUDIANT, None, True),
        (Role.ADMIN_TECHNIQUE, None, True),
        (Role.ADMIN_TECHNIQUE, rpps(3), False),
    ],
)
def test_rpps_requirement_depends_on_the_profession(
    role: Role, number: str | None, ok: bool
) -> None:
    assert (logic.rpps_problem(role, number) is None) is ok


# --- passwords and PINs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "Comptoir-2024!ok",
        "une phrase de passe assez longue",
        "Vingt-Deux caracteres",
    ],
)
def test_acceptable_passwords(password: str) -> None:
    assert logic.password_problems(password, min_length=12) == []


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("Court-1!", "at least 12"),
        ("toutenminuscule", "three kinds"),
        ("aaaaaaaaaaaaaaaaaaaaaaaa", "distinct"),
        ("Pharmacie2024", "well-known"),
        ("Jdupont-2024!x", "login or the name"),
        ("x" * 300, "at most"),
    ],
)
def test_password_policy_names_the_broken_rule(password: str, rule: str) -> None:
    problems = logic.password_problems(
        password, min_length=12, username="jdupont", display_name="Jean Dupont"
    )
    assert any(rule in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("pin", "ok"),
    [
        ("2580", True),
        ("739164", True),
        ("1234", False),
        ("9876", False),
        ("1111", False),
        ("12a4", False),
        ("123", False),
        ("123456789", False),
    ],
)
def test_pin_policy(pin: str, ok: bool) -> None:
    assert (logic.pin_problems(pin) == []) is ok


# --- lockout ----------------------------------------------------------------------------------

POLICY = logic.LockoutPolicy(threshold=5, base_delay_s=30, max_delay_s=900, reset_after_s=3600)


def test_lockout_delay_grows_then_caps() -> None:
    delays = [logic.lockout_delay(n, POLICY) for n in range(1, 12)]
    assert delays[:4] == [0, 0, 0, 0]
    assert delays[4:10] == [30, 60, 120, 240, 480, 900]
    assert delays[10] == 900
    assert logic.lockout_delay(10_000, POLICY) == 900


def test_failures_lock_then_unlock_with_time() -> None:
    state = logic.FailureState()
    now = 1000.0
    for _ in range(5):
        state = logic.after_failure(state, now, POLICY)
    assert logic.locked_for(state, now) == 30
    assert logic.locked_for(state, now + 29) == 1
    assert logic.locked_for(state, now + 30) == 0
    state = logic.after_failure(state, now + 31, POLICY)
    assert logic.locked_for(state, now + 31) == 60


def test_old_failures_are_forgotten_but_not_during_a_lock() -> None:
    state = logic.after_failure(logic.FailureState(), 0.0, POLICY)
    assert logic.current_state(state, 3601.0, POLICY) == logic.FailureState()
    assert logic.current_state(state, 100.0, POLICY) == state
    locked = logic.FailureState(failures=9, last_failure=0.0, locked_until=5000.0)
    assert logic.current_state(locked, 4000.0, POLICY) == locked


# --- PKCE, redirect URIs, scopes --------------------------------------------------------------


def test_pkce_s256_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert logic.pkce_challenge(verifier) == challenge
    assert logic.verify_pkce(verifier, challenge, "S256")
    assert not logic.verify_pkce(verifier, challenge, "plain")
    assert not logic.verify_pkce(verifier[:-1] + "A", challenge, "S256")
    assert not logic.verify_pkce(None, challenge, "S256")
    assert not logic.verify_pkce("short", logic.pkce_challenge("short"), "S256")
    assert logic.challenge_is_valid(challenge)
    assert not logic.challenge_is_valid(challenge + "=")


def test_redirect_uris_match_exactly() -> None:
    registered = ["https://ui.example/cb"]
    assert logic.redirect_uri_allowed(registered, "https://ui.example/cb")
    for other in (
        "https://ui.example/cb/",
        "https://ui.example/cb?x=1",
        "https://UI.example/cb",
        "https://ui.example/c",
        "http://ui.example/cb",
    ):
        assert not logic.redirect_uri_allowed(registered, other), other
    assert logic.redirect_uri_is_acceptable("https://a.example/cb")
    assert logic.redirect_uri_is_acceptable("http://127.0.0.1:9000/cb")
    assert not logic.redirect_uri_is_acceptable("http://a.example/cb")
    assert not logic.redirect_uri_is_acceptable("https://a.example/cb#frag")


def test_granted_scopes_are_what_was_asked_within_role_and_client() -> None:
    holder = role_scopes(Role.PREPARATEUR)
    granted = logic.grant_scopes(
        frozenset({"openid", "patients:read", "documents:sign"}),
        holder=holder,
        client_allowed=None,
        client_default=holder,
    )
    assert granted == {"openid", "patients:read"}
    assert (
        logic.grant_scopes(None, holder=holder, client_allowed=None, client_default=holder)
        == holder
    )
    limited = logic.grant_scopes(
        None,
        holder=holder,
        client_allowed=frozenset({"openid", "profile"}),
        client_default=frozenset({"openid"}),
    )
    assert limited == {"openid"}
    admin = role_scopes(Role.ADMIN_TECHNIQUE)
    assert logic.grant_scopes(
        frozenset({"admin:users", "admin:*", "patients:read"}),
        holder=admin,
        client_allowed=None,
        client_default=admin,
    ) == {"admin:users", "admin:*"}
    assert logic.unknown_scopes(["patients:read", "admin:*", "root", "patients:delete"]) == [
        "patients:delete",
        "root",
    ]


def test_only_staff_managers_hand_out_patient_data() -> None:
    admin = role_scopes(Role.ADMIN_TECHNIQUE)
    titulaire = role_scopes(Role.PHARMACIEN_TITULAIRE)
    adjoint = role_scopes(Role.PHARMACIEN_ADJOINT)
    assert logic.may_manage(admin, Role.ADMIN_TECHNIQUE)
    assert not logic.may_manage(admin, Role.PHARMACIEN_ADJOINT)
    assert not logic.may_manage(admin, Role.CLIENT_MACHINE)
    assert all(logic.may_manage(titulaire, role) for role in Role)
    assert not any(logic.may_manage(adjoint, role) for role in Role)


def test_same_local_day_uses_the_pharmacy_time_zone() -> None:
    # 2024-06-01 21:30 UTC is 23:30 in Paris; 22:30 UTC is already 00:30 the next day.
    evening, after_midnight = 1717277400.0, 1717281000.0
    assert logic.same_local_day(evening, evening + 60, "Europe/Paris")
    assert not logic.same_local_day(evening, after_midnight, "Europe/Paris")
    assert logic.same_local_day(evening, after_midnight, "UTC")
    assert logic.same_local_day(evening, evening, "No/Such_Zone")


# --- the role table ---------------------------------------------------------------------------


def test_role_table_is_consistent() -> None:
    assert set(ROLES) == set(Role)
    for spec in ROLES.values():
        for scope in spec.scopes:
            family, _, rest = scope.partition(":")
            assert scope in SCOPES or (
                rest == "*" and any(s.startswith(family + ":") for s in SCOPES)
            )
    admin = role_scopes(Role.ADMIN_TECHNIQUE)
    assert not any(scope.startswith("patients") for scope in admin), "admin sees no patient data"
    assert not ROLES[Role.CLIENT_MACHINE].human
    assert "openid" not in role_scopes(Role.CLIENT_MACHINE), "machines do not sign in"
    assert role_scopes("no-such-role") == frozenset()
    assert set(ALL_SCOPES) == set(SCOPES)


def test_docs_print_the_role_table_from_code() -> None:
    docs = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert markdown_table() in docs, (
        "regenerate the table: services.identity.roles.markdown_table()"
    )


# --- rate limiter -----------------------------------------------------------------------------


def test_token_bucket_allows_bursts_then_says_how_long_to_wait() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(3, 60.0, clock=lambda: now[0])
    assert [limiter.hit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.hit("a") == pytest.approx(20.0)
    assert limiter.hit("b") == 0.0
    now[0] = 20.0
    assert limiter.hit("a") == 0.0
    assert limiter.hit("a") > 0


def test_token_bucket_forgets_least_recent_clients() -> None:
    limiter = TokenBucketLimiter(1, 60.0, clock=lambda: 0.0, max_keys=2)
    limiter.hit("a")
    limiter.hit("b")
    limiter.hit("c")
    assert limiter.hit("a") == 0.0  # evicted, so counted afresh
    with pytest.raises(ValueError, match="limit"):
        TokenBucketLimiter(0, 1.0)
