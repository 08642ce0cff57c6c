"""Versioned schema migrations, numbered per component.

Each platform part and each service owns a *component* name and a contiguous list of
migrations starting at 1. Applying is idempotent and each migration commits together with its
bookkeeping row, so an interrupted ``hygie db migrate`` resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlcipher3
import sqlite_utils

from appliance.store.errors import StoreSchemaError
from appliance.store.sqlcipher import Store

MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    """One schema step. ``apply`` receives the database inside the migration's transaction."""

    component: str
    version: int
    name: str
    apply: Callable[[sqlite_utils.Database], None]

    @classmethod
    def sql(cls, component: str, version: int, name: str, script: str) -> Migration:
        """A migration made of plain SQL statements separated by semicolons."""

        def run(db: sqlite_utils.Database) -> None:
            for statement in _split_sql(script):
                db.execute(statement)

        return cls(component, version, name, run)


def _split_sql(script: str) -> list[str]:
    """Split a script into statements, keeping trigger bodies whole.

    ``executescript`` would commit the surrounding transaction, so statements are run one by
    one; SQLite's own ``complete_statement`` decides where each one ends.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlcipher3.complete_statement(buffer):
            if buffer.strip(" \n\t;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \n\t;"):
        raise StoreSchemaError(f"incomplete SQL statement in migration: {buffer.strip()[:80]}")
    return statements


def _validate(migrations: Sequence[Migration]) -> dict[str, list[Migration]]:
    by_component: dict[str, list[Migration]] = {}
    for migration in migrations:
        by_component.setdefault(migration.component, []).append(migration)
    for component, items in by_component.items():
        versions = [m.version for m in items]
        if versions != list(range(1, len(items) + 1)):
            raise StoreSchemaError(
                f"migrations of '{component}' must be numbered 1..n in order, got {versions}"
            )
    return by_component


def _ensure_table(db: sqlite_utils.Database) -> None:
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        "component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, "
        "applied_at TEXT NOT NULL, PRIMARY KEY (component, version))"
    )


def applied_versions(store: Store) -> dict[str, int]:
    """Highest applied version per component (empty for a fresh database)."""
    db = store.db
    if MIGRATIONS_TABLE not in db.table_names():
        return {}
    rows = db.execute(
        f"SELECT component, max(version) FROM {MIGRATIONS_TABLE} GROUP BY component"
    ).fetchall()
    return {component: int(version) for component, version in rows}


def pending_migrations(store: Store, migrations: Sequence[Migration]) -> list[Migration]:
    """Migrations not yet applied; raise if the database is ahead of this software."""
    by_component = _validate(migrations)
    current = applied_versions(store)
    for component, version in current.items():
        known = len(by_component.get(component, []))
        if version > known:
            raise StoreSchemaError(
                f"database component '{component}' is at version {version} but this software "
                f"knows only {known}: refusing to run an older Hygie on a newer database"
            )
    return [m for m in migrations if m.version > current.get(m.component, 0)]


def apply_migrations(
    store: Store, migrations: Sequence[Migration], *, up_to: dict[str, int] | None = None
) -> list[Migration]:
    """Apply pending migrations in order (optionally only up to a version per component)."""
    with store.write() as db:
        _ensure_table(db)
    done = []
    for migration in pending_migrations(store, migrations):
        if up_to is not None and migration.version > up_to.get(migration.component, 0):
            continue
        with store.write() as db:
            migration.apply(db)
            db.table(MIGRATIONS_TABLE).insert(
                {
                    "component": migration.component,
                    "version": migration.version,
                    "name": migration.name,
                    "applied_at": datetime.now(UTC).isoformat(),
                }
            )
        done.append(migration)
    return done


def components(migrations: Iterable[Migration]) -> dict[str, int]:
    """Latest version per component, as the software defines it."""
    latest: dict[str, int] = {}
    for migration in migrations:
        latest[migration.component] = max(latest.get(migration.component, 0), migration.version)
    return latest
