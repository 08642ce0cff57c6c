"""Immutable entities with history: every change appends a version row, nothing is updated.

An entity is a frozen ``msgspec.Struct``; the table keeps each version's JSON with who wrote
it and when, so "what did the record say on that day, and who changed it" is a query, not a
reconstruction from logs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec
import sqlite_utils

from appliance.store.errors import VersionConflictError
from appliance.store.migrations import Migration

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
EntityT = TypeVar("EntityT", bound=msgspec.Struct)


class Versioned(msgspec.Struct, Generic[EntityT], frozen=True, kw_only=True):
    """One stored version of an entity and its provenance."""

    entity_id: str
    version: int
    recorded_at: datetime
    recorded_by: str
    deleted: bool = False
    entity: EntityT


class VersionedTable(Generic[EntityT]):
    """Append-only storage of ``entity_type`` values in table ``<name>_versions``."""

    def __init__(self, name: str, entity_type: type[EntityT]) -> None:
        if not _IDENTIFIER.match(name):
            raise ValueError(f"table name must be a lowercase identifier, got {name!r}")
        self.name = name
        self.table = f"{name}_versions"
        self.entity_type = entity_type
        self._decoder = msgspec.json.Decoder(entity_type)

    def create_table_migration(self, component: str, version: int) -> Migration:
        """The migration that creates this table (and its index on the latest version)."""
        return Migration.sql(
            component,
            version,
            f"create {self.table}",
            f"""
            CREATE TABLE {self.table} (
                entity_id TEXT NOT NULL,
                version INTEGER NOT NULL CHECK (version >= 1),
                recorded_at TEXT NOT NULL,
                recorded_by TEXT NOT NULL,
                deleted INTEGER NOT NULL DEFAULT 0,
                data TEXT NOT NULL,
                PRIMARY KEY (entity_id, version)
            ) WITHOUT ROWID;
            CREATE TRIGGER {self.table}_no_update BEFORE UPDATE ON {self.table}
            BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
            CREATE TRIGGER {self.table}_no_delete BEFORE DELETE ON {self.table}
            BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END
            """,
        )

    def _row_to_versioned(self, row: dict[str, Any]) -> Versioned[EntityT]:
        return Versioned(
            entity_id=row["entity_id"],
            version=row["version"],
            recorded_at=datetime.fromisoformat(row["recorded_at"]),
            recorded_by=row["recorded_by"],
            deleted=bool(row["deleted"]),
            entity=self._decoder.decode(row["data"]),
        )

    def latest_version(self, db: sqlite_utils.Database, entity_id: str) -> int:
        row = db.execute(
            f"SELECT max(version) FROM {self.table} WHERE entity_id = ?", [entity_id]
        ).fetchone()
        return int(row[0] or 0)

    def append(
        self,
        db: sqlite_utils.Database,
        entity_id: str,
        entity: EntityT,
        *,
        actor: str,
        expected_version: int,
        deleted: bool = False,
    ) -> Versioned[EntityT]:
        """Write version ``expected_version + 1``; call inside ``Store.write()``.

        ``expected_version`` is 0 to create. A stale expectation raises
        :class:`VersionConflictError` instead of silently overwriting someone's change.
        """
        latest = self.latest_version(db, entity_id)
        if latest != expected_version:
            raise VersionConflictError(self.name, entity_id, expected_version, latest)
        stored = Versioned(
            entity_id=entity_id,
            version=latest + 1,
            recorded_at=datetime.now(UTC),
            recorded_by=actor,
            deleted=deleted,
            entity=entity,
        )
        db.execute(
            f"INSERT INTO {self.table} "
            "(entity_id, version, recorded_at, recorded_by, deleted, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                entity_id,
                stored.version,
                stored.recorded_at.isoformat(),
                actor,
                int(deleted),
                msgspec.json.encode(entity).decode(),
            ],
        )
        return stored

    def get(self, db: sqlite_utils.Database, entity_id: str) -> Versioned[EntityT] | None:
        """The latest version, or ``None`` when the entity never existed."""
        rows = list(
            db.query(
                f"SELECT * FROM {self.table} WHERE entity_id = ? ORDER BY version DESC LIMIT 1",
                [entity_id],
            )
        )
        return self._row_to_versioned(rows[0]) if rows else None

    def history(self, db: sqlite_utils.Database, entity_id: str) -> list[Versioned[EntityT]]:
        """Every version, oldest first."""
        return [
            self._row_to_versioned(row)
            for row in db.query(
                f"SELECT * FROM {self.table} WHERE entity_id = ? ORDER BY version",
                [entity_id],
            )
        ]

    def current(
        self, db: sqlite_utils.Database, *, limit: int = 100, offset: int = 0
    ) -> list[Versioned[EntityT]]:
        """Latest version of each live (not deleted) entity, ordered by id."""
        return [
            self._row_to_versioned(row)
            for row in db.query(
                f"SELECT t.* FROM {self.table} t JOIN ("
                f"  SELECT entity_id, max(version) AS version FROM {self.table}"
                "   GROUP BY entity_id) latest USING (entity_id, version) "
                "WHERE t.deleted = 0 ORDER BY t.entity_id LIMIT ? OFFSET ?",
                [limit, offset],
            )
        ]
