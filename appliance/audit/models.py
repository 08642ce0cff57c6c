"""What the audit log stores, and the rules that keep personal data out of it.

Audit entries are kept for years and read by people who must not see patient data, so every
field is an identifier or a code checked against a narrow pattern: a patient's name, an email
or a token pasted into a field is refused at the door instead of being written forever.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

import msgspec

CODE_PATTERN = re.compile(r"[a-z0-9_.:*-]{1,64}")
OBJECT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{0,128}")
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{0,64}")
SYMBOLIC_ADDRESSES = frozenset({"local", "unknown"})
# Longest textual IPv6 form (with an embedded IPv4 and a zone id) stays well under this.
MAX_ADDRESS_LENGTH = 64

CODE_FIELDS = ("actor", "role", "action", "object_type", "purpose", "outcome")

EVENT_FIELDS = (
    "actor",
    "role",
    "action",
    "object_type",
    "object_id",
    "purpose",
    "client_addr",
    "outcome",
    "request_id",
)


class AuditEventError(ValueError):
    """An event field is not an id or code; the message names the field, never its value."""


def _require_text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise AuditEventError(f"audit field '{field}' must be a string")
    return value


def _check_pattern(field: str, value: object, pattern: re.Pattern[str], rule: str) -> None:
    text = _require_text(field, value)
    if pattern.fullmatch(text) is None:
        raise AuditEventError(
            f"audit field '{field}' must be {rule} (got {len(text)} characters that do not "
            "match; free text, names and secrets are not allowed)"
        )


def _check_address(value: object) -> None:
    text = _require_text("client_addr", value)
    if text in SYMBOLIC_ADDRESSES:
        return
    if len(text) <= MAX_ADDRESS_LENGTH:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            return
    raise AuditEventError(
        "audit field 'client_addr' must be an IPv4 or IPv6 address, 'local' or 'unknown'"
    )


def validate_event(event: AuditEvent) -> None:
    """Raise :class:`AuditEventError` for the first field that is not an id or code."""
    for field in CODE_FIELDS:
        _check_pattern(field, getattr(event, field), CODE_PATTERN, "a code of [a-z0-9_.:*-]{1,64}")
    _check_pattern(
        "object_id", event.object_id, OBJECT_ID_PATTERN, "an identifier of [A-Za-z0-9_.:-]{0,128}"
    )
    _check_address(event.client_addr)
    _check_pattern(
        "request_id", event.request_id, REQUEST_ID_PATTERN, "an identifier of [A-Za-z0-9_.-]{0,64}"
    )


class AuditEvent(msgspec.Struct, frozen=True):
    """Who did what to which object, why, from where, and how it ended.

    Validated on construction (and again by ``AuditLog.record``) so an invalid event cannot
    even be built, whichever code path produced it.
    """

    actor: str
    role: str
    action: str
    object_type: str
    object_id: str
    purpose: str
    client_addr: str
    outcome: str
    request_id: str = ""

    def __post_init__(self) -> None:
        validate_event(self)


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One stored row of the chain, exactly as read back.

    Deliberately not validated: verification must be able to load rows an attacker altered
    in any way and report them, not crash on them.
    """

    seq: int
    recorded_at: str
    actor: str
    role: str
    action: str
    object_type: str
    object_id: str
    purpose: str
    client_addr: str
    outcome: str
    request_id: str
    prev_hash: str
    hash: str


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """An Ed25519 signature over the chain head at ``seq``.

    Anyone holding the database key can rewrite and re-hash the whole chain; only the signing
    key can produce checkpoints, so checkpoints are what pin the history down.
    """

    seq: int
    entry_hash: str
    signed_at: str
    key_id: str
    signature: str


ProblemKind = Literal["altered", "removed", "reordered", "truncated", "bad_checkpoint"]


class VerificationProblem(msgspec.Struct, frozen=True):
    """The first inconsistency found, located by the seq an investigator should look at."""

    kind: ProblemKind
    seq: int
    message: str


class VerificationResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of a full verification; ``problem`` is set exactly when ``ok`` is false."""

    ok: bool
    entries_checked: int
    checkpoints_checked: int
    last_checkpoint_seq: int
    problem: VerificationProblem | None = None
