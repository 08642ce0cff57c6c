"""Persistence of identity: users and clients as versioned rows, and the mutable state of
logins and tokens (hashes of secrets only, never a secret itself).

Functions take the ``sqlite_utils.Database`` of the caller's transaction, so one
``Store.write()`` block can check and change several tables atomically.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import sqlite_utils

from appliance.store import Migration, Versioned, VersionedTable
from services.identity.logic import FailureState
from services.identity.models import OAuthClient, User

COMPONENT = "identity"
USERS: VersionedTable[User] = VersionedTable("identity_users", User)
CLIENTS: VersionedTable[OAuthClient] = VersionedTable("oauth_clients", OAuthClient)
MAX_USERS = 10_000

MIGRATIONS: tuple[Migration, ...] = (
    USERS.create_table_migration(COMPONENT, 1),
    CLIENTS.create_table_migration(COMPONENT, 2),
    Migration.sql(
        COMPONENT,
        3,
        "credentials, login failures, terminal logins",
        """
        CREATE TABLE identity_credentials (
            user_id TEXT PRIMARY KEY,
            password_hash TEXT,
            pin_hash TEXT,
            password_changed_at REAL,
            pin_changed_at REAL
        ) WITHOUT ROWID;
        CREATE TABLE identity_failures (
            key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            last_failure REAL NOT NULL,
            locked_until REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE identity_terminal_logins (
            terminal_hash TEXT NOT NULL,
            user_id TEXT NOT NULL,
            logged_in_at REAL NOT NULL,
            PRIMARY KEY (terminal_hash, user_id)
        ) WITHOUT ROWID
        """,
    ),
    Migration.sql(
        COMPONENT,
        4,
        "oauth authorization requests, codes, token families",
        """
        CREATE TABLE oauth_auth_requests (
            request_id TEXT PRIMARY KEY,
            device_hash TEXT NOT NULL,
            data TEXT NOT NULL,
            expires_at REAL NOT NULL,
            upstream_state TEXT UNIQUE
        ) WITHOUT ROWID;
        CREATE TABLE oauth_codes (
            code_hash TEXT PRIMARY KEY,
            data TEXT NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL,
            family_id TEXT
        ) WITHOUT ROWID;
        CREATE TABLE oauth_families (
            family_id TEXT PRIMARY KEY,
            subject TEXT NOT NULL,
            client_id TEXT NOT NULL,
            data TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL,
            revoked_reason TEXT
        ) WITHOUT ROWID;
        CREATE INDEX oauth_families_subject ON oauth_families (subject);
        CREATE TABLE oauth_refresh_tokens (
            token_hash TEXT PRIMARY KEY,
            family_id TEXT NOT NULL REFERENCES oauth_families (family_id),
            issued_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL
        ) WITHOUT ROWID;
        CREATE INDEX oauth_refresh_family ON oauth_refresh_tokens (family_id);
        CREATE TABLE oauth_access_tokens (
            jti TEXT PRIMARY KEY,
            family_id TEXT NOT NULL,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX oauth_access_family ON oauth_access_tokens (family_id)
        """,
    ),
)


def digest(secret: str) -> str:
    """SHA-256 of a high-entropy random secret (codes, refresh tokens, device ids).

    These are 256-bit random values, so a fast hash is enough: the table never holds what
    a thief of the database could present.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


# --- state rows -------------------------------------------------------------------------------


class AuthRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A validated authorization request waiting for the user to log in."""

    client_id: str
    redirect_uri: str
    scope: str | None
    state: str | None
    code_challenge: str
    nonce: str | None
    created_at: float
    upstream_nonce: str | None = None
    upstream_verifier: str | None = None


class CodeGrant(msgspec.Struct, frozen=True, kw_only=True):
    """What an authorization code stands for."""

    client_id: str
    redirect_uri: str
    user_id: str
    scopes: tuple[str, ...]
    code_challenge: str
    nonce: str | None
    auth_time: int
    amr: tuple[str, ...]


class FamilyData(msgspec.Struct, frozen=True, kw_only=True):
    """A login session: the refresh tokens that descend from one authorization code."""

    scopes: tuple[str, ...]
    role: str
    auth_time: int
    amr: tuple[str, ...]


class Family(msgspec.Struct, frozen=True, kw_only=True):
    family_id: str
    subject: str
    client_id: str
    data: FamilyData
    created_at: float
    expires_at: float
    revoked_at: float | None
    revoked_reason: str | None


class RefreshRow(msgspec.Struct, frozen=True, kw_only=True):
    family_id: str
    issued_at: float
    expires_at: float
    used_at: float | None


# --- users ------------------------------------------------------------------------------------


def get_user(db: sqlite_utils.Database, user_id: str) -> Versioned[User] | None:
    return USERS.get(db, user_id)


def list_users(db: sqlite_utils.Database, *, limit: int = 100, offset: int = 0) -> list[Any]:
    return USERS.current(db, limit=limit, offset=offset)


def user_history(db: sqlite_utils.Database, user_id: str) -> list[Versioned[User]]:
    return USERS.history(db, user_id)


def find_user(
    db: sqlite_utils.Database, *, username: str | None = None, rpps: str | None = None
) -> Versioned[User] | None:
    """The live user with this login or RPPS number (accounts are few: a scan is fine)."""
    for item in USERS.current(db, limit=MAX_USERS):
        if username is not None and item.entity.username == username:
            return item
        if rpps is not None and item.entity.rpps == rpps:
            return item
    return None


def save_user(
    db: sqlite_utils.Database, user: User, *, actor: str, expected_version: int
) -> Versioned[User]:
    return USERS.append(db, user.user_id, user, actor=actor, expected_version=expected_version)


def credentials(db: sqlite_utils.Database, user_id: str) -> tuple[str | None, str | None]:
    """(password hash, PIN hash) of a user."""
    row = db.execute(
        "SELECT password_hash, pin_hash FROM identity_credentials WHERE user_id = ?", [user_id]
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def set_password_hash(db: sqlite_utils.Database, user_id: str, hashed: str, now: float) -> None:
    db.execute(
        "INSERT INTO identity_credentials (user_id, password_hash, password_changed_at) "
        "VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET "
        "password_hash = excluded.password_hash, "
        "password_changed_at = excluded.password_changed_at",
        [user_id, hashed, now],
    )


def set_pin_hash(db: sqlite_utils.Database, user_id: str, hashed: str | None, now: float) -> None:
    db.execute(
        "INSERT INTO identity_credentials (user_id, pin_hash, pin_changed_at) VALUES (?, ?, ?) "
        "ON CONFLICT (user_id) DO UPDATE SET pin_hash = excluded.pin_hash, "
        "pin_changed_at = excluded.pin_changed_at",
        [user_id, hashed, now],
    )


# --- failed logins ----------------------------------------------------------------------------


def failure_state(db: sqlite_utils.Database, key: str) -> FailureState:
    row = db.execute(
        "SELECT failures, last_failure, locked_until FROM identity_failures WHERE key = ?", [key]
    ).fetchone()
    if row is None:
        return FailureState()
    return FailureState(failures=int(row[0]), last_failure=row[1], locked_until=row[2])


def put_failure_state(db: sqlite_utils.Database, key: str, state: FailureState) -> None:
    db.execute(
        "INSERT INTO identity_failures (key, failures, last_failure, locked_until) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, "
        "last_failure = excluded.last_failure, locked_until = excluded.locked_until",
        [key, state.failures, state.last_failure, state.locked_until],
    )


def clear_failures(db: sqlite_utils.Database, key: str) -> None:
    db.execute("DELETE FROM identity_failures WHERE key = ?", [key])


# --- terminals (quick switch) -----------------------------------------------------------------


def record_terminal_login(
    db: sqlite_utils.Database, terminal_hash: str, user_id: str, now: float
) -> None:
    db.execute(
        "INSERT INTO identity_terminal_logins (terminal_hash, user_id, logged_in_at) "
        "VALUES (?, ?, ?) ON CONFLICT (terminal_hash, user_id) "
        "DO UPDATE SET logged_in_at = excluded.logged_in_at",
        [terminal_hash, user_id, now],
    )


def terminal_logins(db: sqlite_utils.Database, terminal_hash: str) -> dict[str, float]:
    """user id → time of the last full login on this terminal."""
    rows = db.execute(
        "SELECT user_id, logged_in_at FROM identity_terminal_logins WHERE terminal_hash = ?",
        [terminal_hash],
    ).fetchall()
    return {str(row[0]): float(row[1]) for row in rows}


def forget_terminal_logins(db: sqlite_utils.Database, user_id: str) -> None:
    db.execute("DELETE FROM identity_terminal_logins WHERE user_id = ?", [user_id])


# --- clients ----------------------------------------------------------------------------------


def get_client(db: sqlite_utils.Database, client_id: str) -> Versioned[OAuthClient] | None:
    return CLIENTS.get(db, client_id)


def list_clients(db: sqlite_utils.Database) -> list[Versioned[OAuthClient]]:
    return CLIENTS.current(db, limit=1000)


def save_client(
    db: sqlite_utils.Database, client: OAuthClient, *, actor: str, expected_version: int
) -> Versioned[OAuthClient]:
    return CLIENTS.append(
        db, client.client_id, client, actor=actor, expected_version=expected_version
    )


# --- authorization requests and codes ---------------------------------------------------------


def put_auth_request(
    db: sqlite_utils.Database,
    request_id: str,
    device_hash: str,
    request: AuthRequest,
    expires_at: float,
) -> None:
    db.execute(
        "INSERT INTO oauth_auth_requests (request_id, device_hash, data, expires_at) "
        "VALUES (?, ?, ?, ?)",
        [request_id, device_hash, msgspec.json.encode(request).decode(), expires_at],
    )


def get_auth_request(
    db: sqlite_utils.Database, request_id: str, now: float
) -> tuple[str, AuthRequest] | None:
    """(device hash, request) of a pending, unexpired request."""
    row = db.execute(
        "SELECT device_hash, data FROM oauth_auth_requests WHERE request_id = ? AND expires_at > ?",
        [request_id, now],
    ).fetchone()
    if row is None:
        return None
    return str(row[0]), msgspec.json.decode(row[1], type=AuthRequest)


def update_auth_request(
    db: sqlite_utils.Database, request_id: str, request: AuthRequest, upstream_state: str
) -> None:
    db.execute(
        "UPDATE oauth_auth_requests SET data = ?, upstream_state = ? WHERE request_id = ?",
        [msgspec.json.encode(request).decode(), upstream_state, request_id],
    )


def find_by_upstream_state(
    db: sqlite_utils.Database, upstream_state: str, now: float
) -> tuple[str, str, AuthRequest] | None:
    """(request id, device hash, request) waiting for this external provider's answer."""
    row = db.execute(
        "SELECT request_id, device_hash, data FROM oauth_auth_requests "
        "WHERE upstream_state = ? AND expires_at > ?",
        [upstream_state, now],
    ).fetchone()
    if row is None:
        return None
    return str(row[0]), str(row[1]), msgspec.json.decode(row[2], type=AuthRequest)


def delete_auth_request(db: sqlite_utils.Database, request_id: str) -> None:
    db.execute("DELETE FROM oauth_auth_requests WHERE request_id = ?", [request_id])


def put_code(
    db: sqlite_utils.Database, code_hash: str, grant: CodeGrant, expires_at: float
) -> None:
    db.execute(
        "INSERT INTO oauth_codes (code_hash, data, expires_at) VALUES (?, ?, ?)",
        [code_hash, msgspec.json.encode(grant).decode(), expires_at],
    )


def get_code(
    db: sqlite_utils.Database, code_hash: str
) -> tuple[CodeGrant, float, float | None, str | None] | None:
    """(grant, expires_at, used_at, family id) of a code, used or not."""
    row = db.execute(
        "SELECT data, expires_at, used_at, family_id FROM oauth_codes WHERE code_hash = ?",
        [code_hash],
    ).fetchone()
    if row is None:
        return None
    return msgspec.json.decode(row[0], type=CodeGrant), row[1], row[2], row[3]


def mark_code_used(
    db: sqlite_utils.Database, code_hash: str, now: float, family_id: str | None
) -> None:
    db.execute(
        "UPDATE oauth_codes SET used_at = ?, family_id = ? WHERE code_hash = ?",
        [now, family_id, code_hash],
    )


# --- token families ---------------------------------------------------------------------------


def create_family(db: sqlite_utils.Database, family: Family) -> None:
    db.execute(
        "INSERT INTO oauth_families (family_id, subject, client_id, data, created_at, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        [
            family.family_id,
            family.subject,
            family.client_id,
            msgspec.json.encode(family.data).decode(),
            family.created_at,
            family.expires_at,
        ],
    )


def _family(row: Any) -> Family:
    return Family(
        family_id=row[0],
        subject=row[1],
        client_id=row[2],
        data=msgspec.json.decode(row[3], type=FamilyData),
        created_at=row[4],
        expires_at=row[5],
        revoked_at=row[6],
        revoked_reason=row[7],
    )


_FAMILY_COLUMNS = (
    "SELECT family_id, subject, client_id, data, created_at, expires_at, revoked_at, "
    "revoked_reason FROM oauth_families"
)


def get_family(db: sqlite_utils.Database, family_id: str) -> Family | None:
    row = db.execute(_FAMILY_COLUMNS + " WHERE family_id = ?", [family_id]).fetchone()
    return _family(row) if row else None


def live_families(db: sqlite_utils.Database, subject: str, now: float) -> list[Family]:
    rows = db.execute(
        _FAMILY_COLUMNS + " WHERE subject = ? AND revoked_at IS NULL AND expires_at > ?",
        [subject, now],
    ).fetchall()
    return [_family(row) for row in rows]


def revoke_family(db: sqlite_utils.Database, family_id: str, now: float, reason: str) -> bool:
    """Mark a family revoked; False when it already was."""
    cursor = db.execute(
        "UPDATE oauth_families SET revoked_at = ?, revoked_reason = ? "
        "WHERE family_id = ? AND revoked_at IS NULL",
        [now, reason, family_id],
    )
    return bool(cursor.rowcount)


def put_refresh_token(
    db: sqlite_utils.Database, token_hash: str, family_id: str, now: float, expires_at: float
) -> None:
    db.execute(
        "INSERT INTO oauth_refresh_tokens (token_hash, family_id, issued_at, expires_at) "
        "VALUES (?, ?, ?, ?)",
        [token_hash, family_id, now, expires_at],
    )


def get_refresh_token(db: sqlite_utils.Database, token_hash: str) -> RefreshRow | None:
    row = db.execute(
        "SELECT family_id, issued_at, expires_at, used_at FROM oauth_refresh_tokens "
        "WHERE token_hash = ?",
        [token_hash],
    ).fetchone()
    if row is None:
        return None
    return RefreshRow(family_id=row[0], issued_at=row[1], expires_at=row[2], used_at=row[3])


def mark_refresh_used(db: sqlite_utils.Database, token_hash: str, now: float) -> bool:
    """Consume a refresh token; False when it was already used (a replay)."""
    cursor = db.execute(
        "UPDATE oauth_refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
        [now, token_hash],
    )
    return bool(cursor.rowcount)


def record_access_token(
    db: sqlite_utils.Database, jti: str, family_id: str, expires_at: int
) -> None:
    db.execute(
        "INSERT INTO oauth_access_tokens (jti, family_id, expires_at) VALUES (?, ?, ?)",
        [jti, family_id, expires_at],
    )


def family_access_tokens(
    db: sqlite_utils.Database, family_id: str, now: float
) -> list[tuple[str, int]]:
    """(jti, expires_at) of the family's access tokens that have not expired yet."""
    rows = db.execute(
        "SELECT jti, expires_at FROM oauth_access_tokens WHERE family_id = ? AND expires_at > ?",
        [family_id, int(now)],
    ).fetchall()
    return [(str(row[0]), int(row[1])) for row in rows]


def access_token_family(db: sqlite_utils.Database, jti: str) -> str | None:
    row = db.execute("SELECT family_id FROM oauth_access_tokens WHERE jti = ?", [jti]).fetchone()
    return str(row[0]) if row else None


# --- housekeeping -----------------------------------------------------------------------------


def purge(db: sqlite_utils.Database, now: float) -> int:
    """Delete state that can no longer be used: expired requests, codes, tokens, families."""
    removed = 0
    for statement, args in (
        ("DELETE FROM oauth_auth_requests WHERE expires_at < ?", [now]),
        ("DELETE FROM oauth_codes WHERE expires_at < ?", [now - 3600]),
        ("DELETE FROM oauth_access_tokens WHERE expires_at < ?", [int(now)]),
        (
            "DELETE FROM oauth_refresh_tokens WHERE family_id IN (SELECT family_id FROM "
            "oauth_families WHERE expires_at < ?)",
            [now - 86_400],
        ),
        ("DELETE FROM oauth_families WHERE expires_at < ?", [now - 86_400]),
        ("DELETE FROM identity_terminal_logins WHERE logged_in_at < ?", [now - 2 * 86_400]),
    ):
        removed += int(db.execute(statement, args).rowcount)
    return removed


def purge_failures(db: sqlite_utils.Database, now: float, reset_after_s: float) -> int:
    """Forget failure counters that no longer lock anything and have aged out."""
    cursor = db.execute(
        "DELETE FROM identity_failures WHERE locked_until < ? AND last_failure < ?",
        [now, now - reset_after_s],
    )
    return int(cursor.rowcount)
