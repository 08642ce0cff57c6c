"""The encrypted store: key handling, migrations, immutable versions, rekey."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from appliance.audit import AUDIT_MIGRATIONS
from appliance.cli import main
from appliance.commands import EXIT_STORE
from appliance.config import Settings
from appliance.keys import MASTER_KEY, new_master_key_text, write_secret
from appliance.platform import open_platform
from appliance.registry import domain_migrations
from appliance.store import (
    Migration,
    Store,
    StoreKeyError,
    StoreMissingError,
    StoreSchemaError,
    VersionConflictError,
    VersionedTable,
    applied_versions,
    apply_migrations,
    pending_migrations,
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Note(msgspec.Struct, frozen=True):
    text: str


def _fresh(tmp_path: Path, key: bytes | None = None) -> Store:
    return Store.open(tmp_path / "t.db", key or os.urandom(32), create=True)


def test_file_is_encrypted_at_rest(tmp_path: Path) -> None:
    store = _fresh(tmp_path)
    table: VersionedTable[Note] = VersionedTable("notes", Note)
    apply_migrations(store, [table.create_table_migration("notes", 1)])
    with store.write() as db:
        table.append(db, "n1", Note("secret-marker-123"), actor="t", expected_version=0)
    store.close()
    raw = (tmp_path / "t.db").read_bytes()
    assert b"secret-marker-123" not in raw
    assert not raw.startswith(b"SQLite format 3")
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(tmp_path / "t.db").execute("SELECT * FROM sqlite_master").fetchall()


def test_wrong_key_fails_clearly_and_leaves_the_file_intact(tmp_path: Path) -> None:
    store = _fresh(tmp_path, b"a" * 32)
    apply_migrations(store, domain_migrations())
    store.close()
    path = tmp_path / "t.db"
    before = _digest(path)
    with pytest.raises(StoreKeyError, match="cannot be opened with the configured key"):
        Store.open(path, b"b" * 32)
    with pytest.raises(StoreKeyError):
        Store.open(path, b"b" * 32, create=True)
    assert _digest(path) == before
    reopened = Store.open(path, b"a" * 32)
    assert applied_versions(reopened)["workstations"] == 1
    reopened.close()


def test_missing_database_is_not_created_implicitly(tmp_path: Path) -> None:
    with pytest.raises(StoreMissingError, match="hygie db migrate"):
        Store.open(tmp_path / "absent.db", b"a" * 32)
    assert not (tmp_path / "absent.db").exists()


def test_key_must_be_256_bits(tmp_path: Path) -> None:
    with pytest.raises(StoreKeyError, match="256 bits"):
        Store.open(tmp_path / "t.db", b"short", create=True)


def test_pragmas_wal_foreign_keys_busy_timeout(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db", b"a" * 32, create=True, busy_timeout_ms=1234)
    db = store.db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


ALL_MIGRATION_SETS = {"domain": domain_migrations(), "audit": list(AUDIT_MIGRATIONS)}
STEPS = [
    pytest.param(name, migration, id=f"{name}-{migration.component}-{migration.version}")
    for name, migrations in ALL_MIGRATION_SETS.items()
    for migration in migrations
]


@pytest.mark.parametrize(("set_name", "migration"), STEPS)
def test_each_migration_applies_from_its_previous_version(
    tmp_path: Path, set_name: str, migration: Migration
) -> None:
    """Every step runs on a database at the previous version (version 0 = empty file)."""
    migrations = ALL_MIGRATION_SETS[set_name]
    store = _fresh(tmp_path)
    previous = {m.component: m.version for m in migrations if m.version < migration.version}
    previous = {c: v for c, v in previous.items() if c == migration.component}
    others = {m.component: m.version for m in migrations if m.component != migration.component}
    apply_migrations(store, migrations, up_to={**others, **previous})
    assert applied_versions(store).get(migration.component, 0) == migration.version - 1
    apply_migrations(store, migrations, up_to={**others, migration.component: migration.version})
    assert applied_versions(store)[migration.component] == migration.version
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("set_name", list(ALL_MIGRATION_SETS))
def test_migrations_from_empty_are_idempotent(tmp_path: Path, set_name: str) -> None:
    migrations = ALL_MIGRATION_SETS[set_name]
    store = _fresh(tmp_path)
    assert len(apply_migrations(store, migrations)) == len(migrations)
    assert apply_migrations(store, migrations) == []
    assert pending_migrations(store, migrations) == []


def test_database_newer_than_software_is_refused(tmp_path: Path) -> None:
    store = _fresh(tmp_path)
    two = [
        Migration.sql("x", 1, "one", "CREATE TABLE a (id INTEGER)"),
        Migration.sql("x", 2, "two", "CREATE TABLE b (id INTEGER)"),
    ]
    apply_migrations(store, two)
    with pytest.raises(StoreSchemaError, match="newer database"):
        pending_migrations(store, two[:1])


def test_migration_numbering_is_checked(tmp_path: Path) -> None:
    store = _fresh(tmp_path)
    with pytest.raises(StoreSchemaError, match=r"numbered 1\.\.n"):
        apply_migrations(store, [Migration.sql("x", 2, "gap", "CREATE TABLE a (id INTEGER)")])


def test_failed_migration_rolls_back_completely(tmp_path: Path) -> None:
    store = _fresh(tmp_path)
    broken = Migration.sql(
        "x", 1, "broken", "CREATE TABLE a (id INTEGER); INSERT INTO missing VALUES (1)"
    )
    with pytest.raises(Exception, match="no such table"):
        apply_migrations(store, [broken])
    assert "a" not in store.db.table_names()
    assert applied_versions(store) == {}


def test_versions_are_appended_never_rewritten(tmp_path: Path) -> None:
    store = _fresh(tmp_path)
    table: VersionedTable[Note] = VersionedTable("notes", Note)
    apply_migrations(store, [table.create_table_migration("notes", 1)])
    with store.write() as db:
        table.append(db, "n1", Note("v1"), actor="alice", expected_version=0)
    with store.write() as db:
        table.append(db, "n1", Note("v2"), actor="bob", expected_version=1)
    history = table.history(store.db, "n1")
    assert [(v.version, v.entity.text, v.recorded_by) for v in history] == [
        (1, "v1", "alice"),
        (2, "v2", "bob"),
    ]
    latest = table.get(store.db, "n1")
    assert latest is not None
    assert latest.entity == Note("v2")
    with pytest.raises(VersionConflictError, match="based on version 1, latest is 2"):
        with store.write() as db:
            table.append(db, "n1", Note("stale"), actor="carol", expected_version=1)
    with pytest.raises(Exception, match="versions are immutable"):
        with store.write() as db:
            db.execute("UPDATE notes_versions SET data = '{}'")
    with pytest.raises(Exception, match="versions are immutable"):
        with store.write() as db:
            db.execute("DELETE FROM notes_versions")
    with pytest.raises(AttributeError):
        latest.entity.text = "mutated"  # type: ignore[misc]
    assert len(table.history(store.db, "n1")) == 2


def test_write_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    store = _fresh(tmp_path)
    table: VersionedTable[Note] = VersionedTable("notes", Note)
    apply_migrations(store, [table.create_table_migration("notes", 1)])
    with pytest.raises(RuntimeError):
        with store.write() as db:
            table.append(db, "n1", Note("v1"), actor="a", expected_version=0)
            raise RuntimeError("boom")
    assert table.get(store.db, "n1") is None


def test_concurrent_writers_from_threads_serialise(tmp_path: Path) -> None:
    store = _fresh(tmp_path)
    table: VersionedTable[Note] = VersionedTable("notes", Note)
    apply_migrations(store, [table.create_table_migration("notes", 1)])
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        try:
            for i in range(50):
                with store.write() as db:
                    table.append(db, f"{prefix}{i}", Note(prefix), actor=prefix, expected_version=0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(table.current(store.db, limit=1000)) == 200


def test_rekey_rotates_the_master_key(settings: Settings) -> None:
    runner = CliRunner()
    old_key = (settings.key_path / MASTER_KEY).read_bytes()
    platform = open_platform(settings)
    platform.store.close()
    platform.audit.store.close()
    result = runner.invoke(main, ["db", "rekey"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted" in result.output
    assert (settings.key_path / MASTER_KEY).read_bytes() != old_key
    assert (settings.key_path / f"{MASTER_KEY}.previous").exists()
    assert oct((settings.key_path / MASTER_KEY).stat().st_mode & 0o777) == "0o600"
    check = runner.invoke(main, ["db", "check"])
    assert check.exit_code == 0, check.output
    # the old key no longer opens the data
    write_secret(settings.key_path / MASTER_KEY, old_key)
    check = runner.invoke(main, ["db", "check"])
    assert check.exit_code == EXIT_STORE
    assert "cannot be opened with the configured key" in check.output


def test_interrupted_rekey_is_resumed(settings: Settings) -> None:
    """A crash after the domain database was rekeyed is finished by running rekey again."""
    from appliance.platform import domain_key
    from appliance.store import rekey_database

    runner = CliRunner()
    old = bytes.fromhex((settings.key_path / MASTER_KEY).read_text().strip())
    new_text = new_master_key_text()
    write_secret(settings.key_path / f"{MASTER_KEY}.next", new_text)
    new = bytes.fromhex(new_text.decode().strip())
    rekey_database(settings.domain_db_path, domain_key(old), domain_key(new))
    result = runner.invoke(main, ["db", "rekey"])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    assert "hygie.db: already under the new key" in result.output
    assert "audit.db: re-encrypted" in result.output
    assert runner.invoke(main, ["db", "check"]).exit_code == 0


def test_missing_key_is_a_clear_cli_error(settings: Settings) -> None:
    (settings.key_path / MASTER_KEY).unlink()
    result = CliRunner().invoke(main, ["db", "check"])
    assert result.exit_code == EXIT_STORE
    assert "master.key" in result.output
    assert "hygie keys init" in result.output
    assert "Traceback" not in result.output


def test_keys_init_is_idempotent_and_private(settings: Settings) -> None:
    before = {p.name: p.read_bytes() for p in settings.key_path.iterdir()}
    result = CliRunner().invoke(main, ["keys", "init"])
    assert result.exit_code == 0
    assert "already present" in result.output
    after = {p.name: p.read_bytes() for p in settings.key_path.iterdir()}
    assert before == after
    for path in settings.key_path.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    assert settings.key_path.stat().st_mode & 0o077 == 0
