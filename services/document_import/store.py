"""Persistence of imports: drafts (immutable versions), their page images, and the catalog
index the matcher searches.

Drafts are a VersionedTable (every correction is a version, with who and when) plus a small
projection for listing; page images are write-once rows (encrypted with the rest of the
store: a scan is patient data). The catalog is read through the medications service's
repository functions and kept in memory per catalog edition.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from appliance.store import Migration, Store, Versioned, VersionedTable
from services.document_import.logic import CatalogIndex
from services.document_import.models import CatalogEntry, Draft
from services.medications import knowledge_editions
from services.medications import store as _catalog

COMPONENT = "document_import"
DRAFTS: VersionedTable[Draft] = VersionedTable("import_drafts", Draft)

_SCHEMA = """
CREATE TABLE import_draft_index (
    draft_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sha256 TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX import_draft_by_status ON import_draft_index (status, created_at);
CREATE TABLE import_pages (
    draft_id TEXT NOT NULL,
    page INTEGER NOT NULL,
    png BLOB NOT NULL,
    PRIMARY KEY (draft_id, page)
) WITHOUT ROWID;
CREATE TRIGGER import_pages_no_update BEFORE UPDATE ON import_pages
BEGIN SELECT RAISE(ABORT, 'page images are write-once'); END;
CREATE TABLE import_folder_seen (
    sha256 TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    outcome TEXT NOT NULL
) WITHOUT ROWID
"""

MIGRATIONS: tuple[Migration, ...] = (
    DRAFTS.create_table_migration(COMPONENT, 1),
    Migration.sql(COMPONENT, 2, "import drafts projection, page images, folder log", _SCHEMA),
)


def save(
    store: Store,
    draft: Draft,
    *,
    actor: str,
    expected_version: int,
    pages: list[bytes] | None = None,
    created_at: str = "",
) -> Versioned[Draft]:
    """Append a version of the draft (and, at creation, its page images) in one
    transaction."""
    with store.write() as db:
        saved = DRAFTS.append(
            db, draft.draft_id, draft, actor=actor, expected_version=expected_version
        )
        db.execute(
            "INSERT INTO import_draft_index (draft_id, status, created_at, sha256) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (draft_id) DO UPDATE SET status = excluded.status",
            [
                draft.draft_id,
                draft.status,
                created_at or saved.recorded_at.isoformat(),
                draft.sha256,
            ],
        )
        for number, png in enumerate(pages or [], start=1):
            db.execute(
                "INSERT INTO import_pages (draft_id, page, png) VALUES (?, ?, ?)",
                [draft.draft_id, number, png],
            )
        return saved


def get(store: Store, draft_id: str) -> Versioned[Draft] | None:
    return DRAFTS.get(store.db, draft_id)


def history(store: Store, draft_id: str) -> list[Versioned[Draft]]:
    return DRAFTS.history(store.db, draft_id)


def page(store: Store, draft_id: str, number: int) -> bytes | None:
    row = store.db.execute(
        "SELECT png FROM import_pages WHERE draft_id = ? AND page = ?", [draft_id, number]
    ).fetchone()
    return bytes(row[0]) if row else None


def listing(store: Store, status: str | None, limit: int, offset: int) -> list[Versioned[Draft]]:
    if status:
        rows = store.db.execute(
            "SELECT draft_id FROM import_draft_index WHERE status = ? "
            "ORDER BY created_at DESC, draft_id LIMIT ? OFFSET ?",
            [status, limit, offset],
        ).fetchall()
    else:
        rows = store.db.execute(
            "SELECT draft_id FROM import_draft_index ORDER BY created_at DESC, draft_id "
            "LIMIT ? OFFSET ?",
            [limit, offset],
        ).fetchall()
    found = (DRAFTS.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None]


def folder_seen(store: Store, sha256: str) -> bool:
    row = store.db.execute("SELECT 1 FROM import_folder_seen WHERE sha256 = ?", [sha256])
    return row.fetchone() is not None


def mark_folder_seen(store: Store, sha256: str, filename: str, seen_at: str, outcome: str) -> None:
    with store.write() as db:
        db.execute(
            "INSERT OR IGNORE INTO import_folder_seen (sha256, filename, seen_at, outcome) "
            "VALUES (?, ?, ?, ?)",
            [sha256, filename, seen_at, outcome[:500]],
        )


# --------------------------------------------------------------------------- catalog

_INDEX_LOCK = threading.Lock()
_INDEXES: dict[tuple[str, str], CatalogIndex] = {}


def catalog_entries(store: Store) -> list[CatalogEntry]:
    """Every speciality with its active moieties and marketed boxes (medications service)."""
    moieties: dict[str, dict[object, tuple[str, str]]] = defaultdict(dict)
    for comp in _catalog.catalog_components(store):
        link = comp.link_no if comp.link_no is not None else comp.substance_code
        pair = (comp.substance_name.strip(), comp.dosage.strip())
        if comp.nature == "FT" or link not in moieties[comp.cis]:
            moieties[comp.cis][link] = pair
    cis_list = sorted(moieties)
    entries: list[CatalogEntry] = []
    for start in range(0, len(cis_list), 500):
        chunk = cis_list[start : start + 500]
        boxes: dict[str, list[str]] = defaultdict(list)
        for box in _catalog.rows_for(store, "med_presentations", chunk):
            if box["marketed"]:
                boxes[str(box["cis"])].append(str(box["cip13"]))
        for row in _catalog.speciality_rows(store, chunk):
            cis = str(row["cis"])
            entries.append(
                CatalogEntry(
                    cis=cis,
                    name=str(row["name"]),
                    form=str(row["form"]),
                    atc=row["atc"] or None,
                    substances=tuple(moieties[cis].values()),
                    cip13s=tuple(sorted(boxes.get(cis, []))),
                )
            )
    return sorted(entries, key=lambda e: e.cis)


def catalog_index(store: Store) -> CatalogIndex:
    """The matcher's index of the catalog in force (rebuilt when a new edition is imported)."""
    edition = knowledge_editions(store)["catalog"] or ""
    key = (str(store.path) if hasattr(store, "path") else str(id(store)), edition)
    with _INDEX_LOCK:
        found = _INDEXES.get(key)
        if found is None:
            found = CatalogIndex(catalog_entries(store))
            _INDEXES.clear()
            _INDEXES[key] = found
        return found
