"""Revocation of access tokens before they expire: a denylist in the encrypted store.

Access tokens are short-lived JWTs (five minutes by default) checked without a round trip to
the issuer, so revoking one needs state. Two kinds of rows are kept, both checked by the
bearer middleware on every request (one indexed lookup):

* ``revoked_access_tokens``: one token by its ``jti`` (logout, RFC 7009 revocation, a
  refresh-token family revoked after reuse: every access token of the family is listed);
* ``revoked_subjects``: every token of a subject issued before an instant (account
  suspended, role changed, password reset), without having to know their ids.

Rows are purged once the tokens they name have expired anyway.
"""

from __future__ import annotations

import sqlcipher3
import sqlite_utils

from appliance.security.principal import Principal
from appliance.store import Migration, Store, StoreError

COMPONENT = "security"
REVOKED_TOKENS = "revoked_access_tokens"
REVOKED_SUBJECTS = "revoked_subjects"
MAX_ACCESS_TOKEN_TTL_S = 3600
"""Upper bound of any access token's lifetime (``access_token_ttl_s`` is capped to it)."""

SECURITY_MIGRATIONS: tuple[Migration, ...] = (
    Migration.sql(
        COMPONENT,
        1,
        "access token denylist",
        f"""
        CREATE TABLE {REVOKED_TOKENS} (
            jti TEXT PRIMARY KEY,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE {REVOKED_SUBJECTS} (
            subject TEXT PRIMARY KEY,
            not_before INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
    ),
)

# Literal SQL (no string building); the table names match the constants above.
_CHECK = (
    "SELECT 1 FROM revoked_access_tokens WHERE jti = ? "
    "UNION ALL SELECT 1 FROM revoked_subjects WHERE subject = ? AND not_before > ? LIMIT 1"
)


def revoke_token(db: sqlite_utils.Database, jti: str, expires_at: int) -> None:
    """Deny one access token until it expires (call inside ``Store.write()``)."""
    db.execute(
        "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES (?, ?) "
        "ON CONFLICT (jti) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
        [jti, int(expires_at)],
    )


def revoke_subject(db: sqlite_utils.Database, subject: str, not_before: int) -> None:
    """Deny every token of ``subject`` issued before ``not_before`` (epoch seconds)."""
    db.execute(
        "INSERT INTO revoked_subjects (subject, not_before) VALUES (?, ?) "
        "ON CONFLICT (subject) DO UPDATE SET not_before = max(not_before, excluded.not_before)",
        [subject, int(not_before)],
    )


def is_revoked(store: Store, principal: Principal) -> bool:
    """Whether the token behind ``principal`` was revoked (fails closed on store errors)."""
    try:
        row = store.db.execute(
            _CHECK, [principal.token_id, principal.subject, principal.issued_at]
        ).fetchone()
    except sqlcipher3.Error as exc:
        raise StoreError(f"token revocation list unavailable: {exc.__class__.__name__}") from exc
    return row is not None


def purge_expired(store: Store, now: int) -> int:
    """Drop rows that no longer deny anything; returns how many were removed."""
    with store.write() as db:
        tokens = db.execute(
            "DELETE FROM revoked_access_tokens WHERE expires_at < ?", [now]
        ).rowcount
        subjects = db.execute(
            "DELETE FROM revoked_subjects WHERE not_before < ?",
            [now - MAX_ACCESS_TOKEN_TTL_S - 60],
        ).rowcount
    return int(tokens) + int(subjects)
