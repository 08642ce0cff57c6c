"""Pure rules of identity and access (no I/O): RPPS numbers, password and PIN policies,
lockout delays, PKCE, scope granting and who may manage whom."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from appliance.security import scope_allows
from services.identity.roles import OIDC_SCOPES, ROLES, SCOPES, Role

# --- RPPS -------------------------------------------------------------------------------------

_RPPS = re.compile(r"[0-9]{11}")


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check over a string of digits, the last one being the key."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def rpps_is_valid(value: str) -> bool:
    """An RPPS number: 11 digits, starting with 1, the last one a Luhn key."""
    return bool(_RPPS.fullmatch(value)) and value[0] == "1" and luhn_valid(value)


def rpps_from_national_id(value: str) -> str | None:
    """RPPS from a national health professional id (``8`` + RPPS, as on CPS cards and in
    Pro Santé Connect's ``SubjectNameID``), or the value itself when it is an RPPS."""
    candidate = value[1:] if len(value) == 12 and value.startswith("8") else value
    return candidate if rpps_is_valid(candidate) else None


def rpps_problem(role: Role, rpps: str | None) -> str | None:
    """Why ``rpps`` does not fit ``role`` (required, optional or absent), or None."""
    rule = ROLES[role].rpps
    if rpps is None:
        return "an RPPS number is required for this role" if rule == "required" else None
    if rule == "none":
        return "this role has no RPPS number"
    if not rpps_is_valid(rpps):
        return "not a valid RPPS number (11 digits starting with 1, Luhn key)"
    return None


# --- passwords and PINs -----------------------------------------------------------------------

MAX_PASSWORD_LENGTH = 256
PASSPHRASE_LENGTH = 20
COMMON_PASSWORDS = frozenset(
    {
        "motdepasse",
        "password",
        "azerty",
        "azertyuiop",
        "qwerty",
        "123456",
        "123456789",
        "pharmacie",
        "pharmacien",
        "officine",
        "hygie",
        "soleil",
        "bonjour",
        "admin",
        "administrateur",
    }
)


def _classes(password: str) -> int:
    kinds = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    )
    return sum(kinds)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if c.isalnum())


def password_problems(
    password: str, *, min_length: int, username: str = "", display_name: str = ""
) -> list[str]:
    """Every rule ``password`` breaks (empty when acceptable).

    Length first (ANSSI): at least ``min_length`` characters, and either three kinds of
    characters or a passphrase of 20 or more; never the login or the name, never a
    well-known password, never one character repeated.
    """
    problems = []
    if len(password) < min_length:
        problems.append(f"at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"at most {MAX_PASSWORD_LENGTH} characters")
    if len(password) < PASSPHRASE_LENGTH and _classes(password) < 3:
        problems.append(
            "three kinds of characters (lowercase, uppercase, digits, symbols) "
            f"or a passphrase of {PASSPHRASE_LENGTH} characters or more"
        )
    folded = _fold(password)
    if len(set(password)) <= 2:
        problems.append("more than two distinct characters")
    if folded in COMMON_PASSWORDS or folded.rstrip("0123456789") in COMMON_PASSWORDS:
        problems.append("not a well-known password")
    for name in (username, *display_name.split()):
        folded_name = _fold(name)
        if len(folded_name) >= 3 and folded_name in folded:
            problems.append("must not contain the login or the name")
            break
    return problems


def pin_problems(pin: str) -> list[str]:
    """A PIN is 4 to 8 digits, neither one repeated digit nor a run (1234, 9876)."""
    if not re.fullmatch(r"[0-9]{4,8}", pin):
        return ["4 to 8 digits"]
    digits = [int(c) for c in pin]
    steps = {b - a for a, b in itertools.pairwise(digits)}
    if len(set(digits)) == 1 or steps in ({1}, {-1}):
        return ["not a repeated digit or a run of digits"]
    return []


# --- lockout ----------------------------------------------------------------------------------


class LockoutPolicy(msgspec.Struct, frozen=True, kw_only=True):
    threshold: int
    base_delay_s: float
    max_delay_s: float
    reset_after_s: float


class FailureState(msgspec.Struct, frozen=True, kw_only=True):
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


def lockout_delay(failures: int, policy: LockoutPolicy) -> float:
    """Seconds locked after ``failures`` consecutive failures: none below the threshold,
    then ``base``, ``2 × base``, ``4 × base``… up to ``max``."""
    if failures < policy.threshold:
        return 0.0
    exponent = min(failures - policy.threshold, 32)
    return float(min(policy.max_delay_s, policy.base_delay_s * (2**exponent)))


def current_state(state: FailureState, now: float, policy: LockoutPolicy) -> FailureState:
    """Forget failures once ``reset_after_s`` passed since the last one (and no lock)."""
    expired = now - state.last_failure > policy.reset_after_s
    if state.failures and expired and now >= state.locked_until:
        return FailureState()
    return state


def locked_for(state: FailureState, now: float) -> float:
    """Seconds left of a lock (0 when not locked)."""
    return max(0.0, state.locked_until - now)


def after_failure(state: FailureState, now: float, policy: LockoutPolicy) -> FailureState:
    """The state after one more failed attempt made while not locked."""
    state = current_state(state, now, policy)
    failures = state.failures + 1
    delay = lockout_delay(failures, policy)
    return FailureState(
        failures=failures,
        last_failure=now,
        locked_until=now + delay if delay else state.locked_until,
    )


# --- OAuth: PKCE, redirect URIs, scopes -------------------------------------------------------

_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


def pkce_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(verifier))`` without padding (RFC 7636 S256)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def challenge_is_valid(challenge: str) -> bool:
    return bool(_CHALLENGE.fullmatch(challenge))


def verify_pkce(verifier: str | None, challenge: str, method: str) -> bool:
    """Only S256 is accepted; ``plain`` would let a stolen code be redeemed as is."""
    if method != "S256" or not verifier or not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(pkce_challenge(verifier), challenge)


def redirect_uri_allowed(registered: Iterable[str], given: str) -> bool:
    """Exact string comparison (no prefix, no normalisation: RFC 9700)."""
    return any(hmac.compare_digest(uri.encode(), given.encode()) for uri in registered)


def redirect_uri_is_acceptable(uri: str) -> bool:
    """https, or http on the loopback interface only; no fragment."""
    parts = urlsplit(uri)
    if parts.fragment or not parts.netloc:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def parse_scope(raw: str | None) -> frozenset[str] | None:
    """Space-separated scope list; None when the parameter was absent."""
    if raw is None:
        return None
    return frozenset(raw.split())


def unknown_scopes(requested: Iterable[str]) -> list[str]:
    """Requested scopes that are neither catalogue scopes nor ``x:*`` of a known family."""
    families = {scope.split(":", 1)[0] for scope in SCOPES}
    bad = []
    for scope in requested:
        if scope in SCOPES:
            continue
        family, _, rest = scope.partition(":")
        if rest == "*" and family in families:
            continue
        bad.append(scope)
    return sorted(bad)


def grant_scopes(
    requested: frozenset[str] | None,
    *,
    holder: frozenset[str],
    client_allowed: frozenset[str] | None,
    client_default: frozenset[str],
) -> frozenset[str]:
    """The scopes a token gets: what was asked (or the client's default when nothing was),
    limited to what the holder's role grants and what the client may obtain.

    A requested scope outside those is dropped, not an error (RFC 6749 §3.3): the token
    response says which scopes were granted.
    """
    wanted = client_default if requested is None else requested
    granted = set()
    for scope in wanted:
        if not scope_allows(holder, scope) and not _wildcard_within(scope, holder):
            continue
        if client_allowed is not None and not (
            scope_allows(client_allowed, scope) or _wildcard_within(scope, client_allowed)
        ):
            continue
        granted.add(scope)
    return frozenset(granted)


def _wildcard_within(scope: str, granted: frozenset[str]) -> bool:
    """``x:*`` requested is within a grant only when the grant holds ``x:*`` too."""
    return scope.endswith(":*") and scope in granted


def oidc_only(scopes: Iterable[str]) -> bool:
    return all(scope in OIDC_SCOPES for scope in scopes)


# --- who may manage whom ----------------------------------------------------------------------


def may_manage(actor_scopes: frozenset[str], target_role: Role) -> bool:
    """``admin:users`` manages accounts; roles reaching patient data need ``staff:manage``
    too, so a technical administrator cannot give himself (or anyone) patient data."""
    if not scope_allows(actor_scopes, "admin:users"):
        return False
    return not ROLES[target_role].patient_data or scope_allows(actor_scopes, "staff:manage")


# --- time -------------------------------------------------------------------------------------


def local_zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def same_local_day(first: float, second: float, zone_name: str) -> bool:
    """Whether two instants fall on the same calendar day in the pharmacy's time zone."""
    zone = local_zone(zone_name)
    a = datetime.fromtimestamp(first, UTC)
    b = datetime.fromtimestamp(second, UTC)
    if zone is not None:
        a, b = a.astimezone(zone), b.astimezone(zone)
    return a.date() == b.date()
