"""Generated and signed documents, append-only (triggers refuse UPDATE and DELETE).

A document is never changed: signing stores a new row that points at the unsigned one
(``signed_from``). The content lives next to its SHA-256 so a download can be checked
against the hash written to the audit log.
"""

# ruff: noqa: S608 - the table and column names are constants of this module; values are
# always bound as parameters.
from __future__ import annotations

import secrets
from datetime import datetime

import sqlite_utils

from appliance.store import Migration, Store
from services.documents.models import StoredDocument

COMPONENT = "documents"
TABLE = "documents"
_COLUMNS = (
    "id, kind, format, patient_id, cycle_id, template_version, sha256, size, created_at, "
    "created_by, signed_from, signer, synthesis_source"
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration.sql(
        COMPONENT,
        1,
        "create documents (append-only)",
        f"""
        CREATE TABLE {TABLE} (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            format TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            cycle_id TEXT,
            template_version TEXT NOT NULL,
            sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
            size INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            signed_from TEXT REFERENCES {TABLE} (id),
            signer TEXT,
            synthesis_source TEXT,
            content BLOB NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX documents_patient ON {TABLE} (patient_id, created_at);
        CREATE UNIQUE INDEX documents_signed_once ON {TABLE} (signed_from)
            WHERE signed_from IS NOT NULL;
        CREATE TRIGGER documents_no_update BEFORE UPDATE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'documents are immutable'); END;
        CREATE TRIGGER documents_no_delete BEFORE DELETE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'documents are immutable'); END
        """,
    ),
)


def new_id() -> str:
    return "doc-" + secrets.token_hex(10)


def insert(db: sqlite_utils.Database, doc: StoredDocument, content: bytes) -> None:
    """Insert inside the caller's transaction (so the outbox entry commits with it)."""
    db.execute(
        f"INSERT INTO {TABLE} ({_COLUMNS}, content) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            doc.id,
            doc.kind,
            doc.format,
            doc.patient_id,
            doc.cycle_id,
            doc.template_version,
            doc.sha256,
            doc.size,
            doc.created_at.isoformat(),
            doc.created_by,
            doc.signed_from,
            doc.signer,
            doc.synthesis_source,
            content,
        ],
    )


def _row(row: tuple[object, ...]) -> StoredDocument:
    return StoredDocument(
        id=str(row[0]),
        kind=row[1],  # type: ignore[arg-type]
        format=row[2],  # type: ignore[arg-type]
        patient_id=str(row[3]),
        cycle_id=None if row[4] is None else str(row[4]),
        template_version=str(row[5]),
        sha256=str(row[6]),
        size=int(row[7]),  # type: ignore[call-overload]
        created_at=datetime.fromisoformat(str(row[8])),
        created_by=str(row[9]),
        signed_from=None if row[10] is None else str(row[10]),
        signer=None if row[11] is None else str(row[11]),
        synthesis_source=None if row[12] is None else str(row[12]),
    )


def get(store: Store, document_id: str) -> StoredDocument | None:
    row = store.db.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ?", [document_id]).fetchone()
    return _row(row) if row else None


def content(store: Store, document_id: str) -> bytes | None:
    row = store.db.execute(f"SELECT content FROM {TABLE} WHERE id = ?", [document_id]).fetchone()
    return bytes(row[0]) if row else None


def signed_copy(store: Store, document_id: str) -> str | None:
    row = store.db.execute(
        f"SELECT id FROM {TABLE} WHERE signed_from = ?", [document_id]
    ).fetchone()
    return str(row[0]) if row else None


def of_patient(store: Store, patient_id: str, *, limit: int = 200) -> list[StoredDocument]:
    rows = store.db.execute(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE patient_id = ? ORDER BY created_at DESC, id LIMIT ?",
        [patient_id, limit],
    ).fetchall()
    return [_row(r) for r in rows]
