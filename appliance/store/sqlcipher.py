"""One SQLCipher database file, opened with a raw 256-bit key.

The key is checked by reading the schema before anything is written, so a wrong key fails
with :class:`StoreKeyError` and never touches the file. Connections are per thread (SQLite
connections must not be shared across threads) and cheap to open: with a raw key SQLCipher
skips its password KDF.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlcipher3
import sqlite_utils

from appliance.store.errors import StoreError, StoreKeyError, StoreMissingError

KEY_BYTES = 32


def _key_pragma(key: bytes) -> str:
    if len(key) != KEY_BYTES:
        raise StoreKeyError(f"database key must be {KEY_BYTES * 8} bits, got {len(key) * 8}")
    return f"PRAGMA key = \"x'{key.hex()}'\""


def open_connection(
    path: Path, key: bytes, *, busy_timeout_ms: int = 5000, create: bool = False
) -> Any:
    """Open ``path`` with ``key``; raise a clear error rather than ever corrupting the file."""
    if not create and not path.exists():
        raise StoreMissingError(f"database {path} does not exist: run 'hygie db migrate'")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        conn = sqlcipher3.connect(
            str(path),
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlcipher3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(_key_pragma(key))
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher3.DatabaseError as exc:
        conn.close()
        raise StoreKeyError(
            f"database {path} cannot be opened with the configured key "
            "(wrong key, or not a Hygie database); the file was left untouched"
        ) from exc
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a committed write survives power loss as well as a killed process.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def rekey_database(path: Path, old_key: bytes, new_key: bytes, busy_timeout_ms: int = 5000) -> None:
    """Re-encrypt ``path`` under ``new_key`` (SQLCipher ``PRAGMA rekey``) and prove it opens."""
    conn = open_connection(path, old_key, busy_timeout_ms=busy_timeout_ms)
    try:
        # rekey needs the database out of WAL so every page is rewritten in the main file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute(f"PRAGMA rekey = \"x'{new_key.hex()}'\"")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    open_connection(path, new_key, busy_timeout_ms=busy_timeout_ms).close()


class Store:
    """An encrypted database with one connection per thread and explicit write transactions."""

    def __init__(self, path: Path, key: bytes, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._key = key
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []

    @classmethod
    def open(
        cls, path: Path, key: bytes, *, busy_timeout_ms: int = 5000, create: bool = False
    ) -> Store:
        """Open (and with ``create`` make) the file now, so key errors surface at once."""
        store = cls(path, key, busy_timeout_ms=busy_timeout_ms)
        store._connect(create=create)
        return store

    def _connect(self, create: bool = False) -> sqlite_utils.Database:
        conn = open_connection(
            self.path, self._key, busy_timeout_ms=self._busy_timeout_ms, create=create
        )
        db = sqlite_utils.Database(conn)
        self._local.db = db
        with self._lock:
            self._connections.append(conn)
        return db

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection, for reads and for sqlite-utils table helpers."""
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        return db if db is not None else self._connect()

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction taken with ``BEGIN IMMEDIATE``.

        Taking the write lock up front avoids the deadlock of two readers both upgrading;
        sqlite-utils calls inside nest as savepoints, so the whole block commits or none.
        """
        db = self.db
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        else:
            db.conn.execute("COMMIT")

    def check(self) -> None:
        """Raise if the database cannot be read with the key (used by health checks)."""
        conn = open_connection(self.path, self._key, busy_timeout_ms=self._busy_timeout_ms)
        try:
            conn.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlcipher3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()
