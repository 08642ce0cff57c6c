"""Catalog tables in the domain store: one-transaction replacement, search, history.

An import deletes and rewrites every catalog table inside a single ``BEGIN IMMEDIATE``
transaction, so readers see the previous catalog until the commit and a failure at any
point leaves it untouched. The status history and the import log are appended, never
replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import sqlite_utils

from appliance.store import Migration, Store
from services.medications.logic import (
    build_views,
    classify_code,
    content_hash_name,
    diff_catalog,
    encode_json,
    fold,
    marketing_label,
    search_tokens,
    snapshot,
)
from services.medications.models import (
    AtcAssignment,
    BdpmData,
    CatalogImportReport,
    CatalogProduct,
    CatalogSnapshot,
    Component,
    MedicationView,
    StatusChange,
)
from services.medications.thesaurus import Thesaurus
from services.medications.thesaurus import cached as cached_thesaurus
from services.medications.thesaurus import load as load_thesaurus

COMPONENT = "medications"
CATALOG_TABLES = (
    "med_specialities",
    "med_presentations",
    "med_components",
    "med_generics",
    "med_conditions",
    "med_availability",
    "med_search",
)

_SCHEMA = """
CREATE TABLE med_specialities (
    cis TEXT PRIMARY KEY, name TEXT NOT NULL, name_folded TEXT NOT NULL, form TEXT NOT NULL,
    routes TEXT NOT NULL, amm_status TEXT NOT NULL, amm_procedure TEXT NOT NULL,
    marketed INTEGER NOT NULL, amm_date TEXT, bdm_status TEXT NOT NULL, eu_number TEXT NOT NULL,
    holders TEXT NOT NULL, reinforced_monitoring INTEGER NOT NULL,
    atc TEXT, atc_source TEXT, atc_evidence TEXT
) WITHOUT ROWID;
CREATE INDEX med_specialities_name ON med_specialities (name_folded);
CREATE INDEX med_specialities_atc ON med_specialities (atc);
CREATE TABLE med_presentations (
    cip13 TEXT PRIMARY KEY, cip7 TEXT NOT NULL, cis TEXT NOT NULL, label TEXT NOT NULL,
    admin_status TEXT NOT NULL, marketing_status TEXT NOT NULL, marketed INTEGER NOT NULL,
    marketing_date TEXT, collectivities INTEGER, reimbursement_rate INTEGER,
    price_cents INTEGER, price_with_fees_cents INTEGER, fees_cents INTEGER,
    reimbursement_text TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX med_presentations_cis ON med_presentations (cis);
CREATE INDEX med_presentations_cip7 ON med_presentations (cip7);
CREATE TABLE med_components (
    cis TEXT NOT NULL, element TEXT NOT NULL, substance_code TEXT NOT NULL,
    substance_name TEXT NOT NULL, substance_folded TEXT NOT NULL, dosage TEXT NOT NULL,
    dosage_ref TEXT NOT NULL, nature TEXT NOT NULL, link_no INTEGER
);
CREATE INDEX med_components_cis ON med_components (cis);
CREATE INDEX med_components_substance ON med_components (substance_code);
CREATE TABLE med_generics (
    group_id INTEGER NOT NULL, label TEXT NOT NULL, cis TEXT NOT NULL, kind INTEGER NOT NULL,
    sort_no INTEGER, PRIMARY KEY (group_id, cis)
) WITHOUT ROWID;
CREATE INDEX med_generics_cis ON med_generics (cis);
CREATE TABLE med_conditions (cis TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX med_conditions_cis ON med_conditions (cis);
CREATE TABLE med_availability (
    cis TEXT NOT NULL, cip13 TEXT, status_code INTEGER NOT NULL, status_label TEXT NOT NULL,
    start_date TEXT, updated_date TEXT, end_date TEXT, link TEXT NOT NULL
);
CREATE INDEX med_availability_cis ON med_availability (cis);
CREATE VIRTUAL TABLE med_search USING fts5(
    cis UNINDEXED, name, substances, tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3 4'
);
CREATE TABLE med_imports (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, edition TEXT NOT NULL, sha256 TEXT NOT NULL,
    imported_at TEXT NOT NULL, actor TEXT NOT NULL, report TEXT NOT NULL
);
CREATE TABLE med_history (
    id INTEGER PRIMARY KEY, import_id INTEGER NOT NULL REFERENCES med_imports (id),
    cis TEXT NOT NULL, cip13 TEXT, kind TEXT NOT NULL, old_value TEXT, new_value TEXT
);
CREATE INDEX med_history_cis ON med_history (cis);
CREATE TRIGGER med_history_no_update BEFORE UPDATE ON med_history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TRIGGER med_history_no_delete BEFORE DELETE ON med_history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TABLE med_thesaurus (
    import_id INTEGER PRIMARY KEY REFERENCES med_imports (id), edition TEXT NOT NULL,
    data BLOB NOT NULL
)
"""

MIGRATIONS: tuple[Migration, ...] = (Migration.sql(COMPONENT, 1, "medication catalog", _SCHEMA),)


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def previous_snapshot(db: sqlite_utils.Database) -> CatalogSnapshot | None:
    """The status part of the catalog in force, or ``None`` before the first import."""
    row = db.execute("SELECT count(*) FROM med_imports WHERE kind = 'catalog'").fetchone()
    if not row[0]:
        return None
    specialities = {
        cis: marketing_label(bool(marketed))
        for cis, marketed in db.execute("SELECT cis, marketed FROM med_specialities")
    }
    presentations = {
        cip13: (cis, status, price)
        for cip13, cis, status, price in db.execute(
            "SELECT cip13, cis, marketing_status, price_cents FROM med_presentations"
        )
    }
    availability = {
        (cis, cip13 or ""): (code, label, start or "")
        for cis, cip13, code, label, start in db.execute(
            "SELECT cis, cip13, status_code, status_label, start_date FROM med_availability"
        )
    }
    return CatalogSnapshot(
        specialities=specialities, presentations=presentations, availability=availability
    )


def last_import(store: Store, kind: str) -> dict[str, Any] | None:
    rows = list(
        store.db.query(
            "SELECT id, edition, sha256, imported_at, report FROM med_imports "
            "WHERE kind = ? ORDER BY id DESC LIMIT 1",
            [kind],
        )
    )
    return rows[0] if rows else None


def _substances_by_cis(data: BdpmData) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in data.components:
        names = found.setdefault(item.cis, [])
        if item.substance_name not in names:
            names.append(item.substance_name)
    return found


def _insert(db: sqlite_utils.Database, table: str, rows: Iterable[Sequence[Any]]) -> None:
    rows = list(rows)
    if not rows:
        return
    marks = ", ".join("?" * len(rows[0]))
    db.conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)  # noqa: S608


def replace_catalog(
    store: Store,
    data: BdpmData,
    assigned: dict[str, AtcAssignment],
    report: CatalogImportReport,
    *,
    actor: str,
) -> tuple[CatalogImportReport, list[StatusChange]]:
    """Swap the catalog for ``data`` and append its history, all or nothing."""
    current = snapshot(data.specialities, data.presentations, data.availability)
    substances = _substances_by_cis(data)
    with store.write() as db:
        changes = diff_catalog(previous_snapshot(db), current)
        for table in CATALOG_TABLES:
            db.execute(f"DELETE FROM {table}")  # noqa: S608
        _insert(
            db,
            "med_specialities",
            (
                (
                    s.cis,
                    s.name,
                    fold(s.name),
                    s.form,
                    ";".join(s.routes),
                    s.amm_status,
                    s.amm_procedure,
                    int(s.marketed),
                    _iso(s.amm_date),
                    s.bdm_status,
                    s.eu_number,
                    s.holders,
                    int(s.reinforced_monitoring),
                    a.atc if (a := assigned.get(s.cis)) else None,
                    a.source if a else None,
                    a.evidence if a else None,
                )
                for s in data.specialities
            ),
        )
        _insert(
            db,
            "med_presentations",
            (
                (
                    p.cip13,
                    p.cip7,
                    p.cis,
                    p.label,
                    p.admin_status,
                    p.marketing_status,
                    int(p.marketed),
                    _iso(p.marketing_date),
                    None if p.collectivities is None else int(p.collectivities),
                    p.reimbursement_rate,
                    p.price_cents,
                    p.price_with_fees_cents,
                    p.fees_cents,
                    p.reimbursement_text,
                )
                for p in data.presentations
            ),
        )
        _insert(
            db,
            "med_components",
            (
                (
                    c.cis,
                    c.element,
                    c.substance_code,
                    c.substance_name,
                    fold(c.substance_name),
                    c.dosage,
                    c.dosage_ref,
                    c.nature,
                    c.link_no,
                )
                for c in data.components
            ),
        )
        _insert(
            db,
            "med_generics",
            ((g.group_id, g.label, g.cis, g.kind, g.sort_no) for g in data.generics),
        )
        _insert(db, "med_conditions", ((c.cis, c.text) for c in data.conditions))
        _insert(
            db,
            "med_availability",
            (
                (
                    a.cis,
                    a.cip13,
                    a.status_code,
                    a.status_label,
                    _iso(a.start_date),
                    _iso(a.updated_date),
                    _iso(a.end_date),
                    a.link,
                )
                for a in data.availability
            ),
        )
        _insert(
            db,
            "med_search",
            (
                (s.cis, fold(s.name), fold(" ".join(substances.get(s.cis, []))))
                for s in data.specialities
            ),
        )
        final = msgspec.structs.replace(report, history_events=len(changes))
        cursor = db.conn.execute(
            "INSERT INTO med_imports (kind, edition, sha256, imported_at, actor, report) "
            "VALUES ('catalog', ?, ?, ?, ?, ?)",
            [report.edition, report.sha256, _now(), actor, encode_json(final)],
        )
        import_id = cursor.lastrowid
        _insert(
            db,
            "med_history (import_id, cis, cip13, kind, old_value, new_value)",
            ((import_id, c.cis, c.cip13, c.kind.value, c.old, c.new) for c in changes),
        )
    return final, changes


def record_thesaurus(store: Store, edition: str, sha256: str, data: bytes, actor: str) -> int:
    """Keep an imported thesaurus edition in the store: it becomes the one in force."""
    with store.write() as db:
        cursor = db.conn.execute(
            "INSERT INTO med_imports (kind, edition, sha256, imported_at, actor, report) "
            "VALUES ('thesaurus', ?, ?, ?, ?, '{}')",
            [edition, sha256, _now(), actor],
        )
        import_id = int(cursor.lastrowid or 0)
        db.conn.execute(
            "INSERT INTO med_thesaurus (import_id, edition, data) VALUES (?, ?, ?)",
            [import_id, edition, data],
        )
    return import_id


def stored_thesaurus(store: Store) -> tuple[str, bytes] | None:
    row = store.db.execute(
        "SELECT edition, data FROM med_thesaurus ORDER BY import_id DESC LIMIT 1"
    ).fetchone()
    return (str(row[0]), bytes(row[1])) if row else None


# --- reads ------------------------------------------------------------------------------


def speciality_rows(store: Store, cis_list: Sequence[str]) -> list[dict[str, Any]]:
    if not cis_list:
        return []
    marks = ", ".join("?" * len(cis_list))
    return list(
        store.db.query(f"SELECT * FROM med_specialities WHERE cis IN ({marks})", list(cis_list))  # noqa: S608
    )


def rows_for(store: Store, table: str, cis_list: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a per-speciality table for several CIS (one query, not one per result)."""
    if not cis_list:
        return []
    assert table in {"med_presentations", "med_components", "med_generics", "med_availability"}
    marks = ", ".join("?" * len(cis_list))
    return list(
        store.db.query(f"SELECT * FROM {table} WHERE cis IN ({marks})", list(cis_list))  # noqa: S608
    )


def cis_by_code(store: Store, column: str, code: str) -> list[str]:
    assert column in {"cip7", "cip13"}
    return [
        row[0]
        for row in store.db.execute(
            f"SELECT cis FROM med_presentations WHERE {column} = ?",  # noqa: S608
            [code],
        )
    ]


def search_cis(store: Store, query: str, *, by: str, limit: int, marketed_only: bool) -> list[str]:
    """CIS matching a text query: name prefix, substance, or both (full text)."""
    tokens = search_tokens(query)
    if not tokens:
        return []
    marketed = "AND s.marketed = 1 " if marketed_only else ""
    if by == "name":
        prefix = " ".join(tokens)
        rows = store.db.execute(
            "SELECT cis FROM med_specialities s WHERE name_folded >= ? AND name_folded < ? "  # noqa: S608
            f"{marketed}ORDER BY s.marketed DESC, name_folded LIMIT ?",
            [prefix, prefix + "\uffff", limit],
        )
        return [row[0] for row in rows]
    column = "substances" if by == "substance" else None
    terms = " ".join(f'"{token}"*' for token in tokens)
    expression = f"{column} : ({terms})" if column else terms
    rows = store.db.execute(
        "SELECT m.cis FROM med_search m JOIN med_specialities s ON s.cis = m.cis "  # noqa: S608
        f"WHERE med_search MATCH ? {marketed}"
        "ORDER BY s.marketed DESC, m.rank, s.name_folded LIMIT ?",
        [expression, limit],
    )
    return [row[0] for row in rows]


def medication_views(store: Store, cis_list: Sequence[str]) -> list[MedicationView]:
    """Counter views of these specialities, in the given order (five queries in all)."""
    return build_views(
        cis_list,
        speciality_rows(store, cis_list),
        rows_for(store, "med_presentations", cis_list),
        rows_for(store, "med_components", cis_list),
        rows_for(store, "med_generics", cis_list),
        rows_for(store, "med_availability", cis_list),
    )


def history_rows(store: Store, cis: str) -> list[dict[str, Any]]:
    return list(
        store.db.query(
            "SELECT h.kind, h.cip13, h.old_value, h.new_value, i.imported_at, i.edition, "
            "i.sha256 FROM med_history h JOIN med_imports i ON i.id = h.import_id "
            "WHERE h.cis = ? ORDER BY h.id",
            [cis],
        )
    )


def first_catalog_import(store: Store) -> dict[str, Any] | None:
    rows = list(
        store.db.query(
            "SELECT edition, sha256, imported_at FROM med_imports WHERE kind = 'catalog' "
            "ORDER BY id LIMIT 1"
        )
    )
    return rows[0] if rows else None


def catalog_edition(store: Store) -> str | None:
    row = last_import(store, "catalog")
    return content_hash_name(row["edition"], row["sha256"]) if row else None


def table_counts(store: Store) -> dict[str, int]:
    counts = {}
    for table in CATALOG_TABLES[:-1]:
        counts[table] = int(store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    return counts


def catalog_components(store: Store) -> list[Component]:
    """Every composition row, to map thesaurus names to BDPM substances."""
    return [
        Component(
            cis=r[0],
            element=r[1],
            substance_code=r[2],
            substance_name=r[3],
            dosage=r[4],
            dosage_ref=r[5],
            nature=r[6],
            link_no=r[7],
        )
        for r in store.db.execute(
            "SELECT cis, element, substance_code, substance_name, dosage, dosage_ref, nature, "
            "link_no FROM med_components"
        )
    ]


def catalog_atc(store: Store) -> dict[str, str]:
    """CIS -> ATC code of every speciality that has one."""
    return {
        str(r[0]): str(r[1])
        for r in store.db.execute("SELECT cis, atc FROM med_specialities WHERE atc IS NOT NULL")
    }


def products(store: Store, cis_list: Sequence[str]) -> dict[str, CatalogProduct]:
    """Catalog products by CIS with their active moieties (two queries for the whole list).

    A BDPM composition lists, per link number, the substance as salt (``SA``) and the
    active moiety (``FT``) when they differ: the moiety is kept, once per link.
    """
    wanted = sorted(set(cis_list))
    if not wanted:
        return {}
    by_cis: dict[str, dict[object, tuple[str, str]]] = {}
    for comp in rows_for(store, "med_components", wanted):
        links = by_cis.setdefault(str(comp["cis"]), {})
        link = comp["link_no"] if comp["link_no"] is not None else comp["substance_code"]
        pair = (str(comp["substance_code"]), str(comp["substance_name"]).strip())
        if comp["nature"] == "FT" or link not in links:
            links[link] = pair
    found: dict[str, CatalogProduct] = {}
    for row in speciality_rows(store, wanted):
        cis = str(row["cis"])
        found[cis] = CatalogProduct(
            cis=cis,
            name=str(row["name"]),
            atc=row["atc"] or None,
            atc_source=row["atc_source"] or None,
            marketed=bool(row["marketed"]),
            substances=tuple(sorted(set(by_cis.get(cis, {}).values()))),
        )
    return found


_DRUG_WORDS: dict[tuple[str, str | None], frozenset[str]] = {}


def drug_words(store: Store) -> frozenset[str]:
    """Folded words that name a drug in the catalog in force (cached per edition).

    Every word of four letters or more of a substance name (``BÉSILATE D'AMLODIPINE``
    gives ``BESILATE`` and ``AMLODIPINE``), and the first word of each speciality name
    (the brand: ``DOLIPRANE``). A word outside this set is not a drug this catalog knows.
    """
    key = (str(store.path), catalog_edition(store))
    found = _DRUG_WORDS.get(key)
    if found is not None:
        return found
    words: set[str] = set()
    for (name,) in store.db.execute("SELECT DISTINCT substance_name FROM med_components"):
        words.update(w for w in fold(str(name)).split(" ") if len(w) >= 4)
    for (name,) in store.db.execute("SELECT name_folded FROM med_specialities"):
        first = str(name).split(" ", 1)[0]
        if len(first) >= 4:
            words.add(first)
    found = frozenset(words)
    _DRUG_WORDS.clear()
    _DRUG_WORDS[key] = found
    return found


def lookup_cis(store: Store, code: str) -> str | None:
    """The CIS of a CIS, CIP7, CIP13, GTIN-14 or DataMatrix scan, if the catalog has it."""
    kind, value = classify_code(code)
    if kind == "cis":
        return value if speciality_rows(store, [value]) else None
    if kind in {"cip7", "cip13"}:
        found = cis_by_code(store, kind, value)
        return found[0] if found else None
    return None


def search(
    store: Store, query: str, *, by: str = "auto", limit: int = 20, marketed_only: bool = False
) -> list[MedicationView]:
    """The counter's search: a scanned or typed code finds its box, anything else a name."""
    cis_list: list[str]
    kind, value = classify_code(query) if by == "auto" else ("text", query)
    if kind == "cis":
        cis_list = [value]
    elif kind in {"cip7", "cip13"}:
        cis_list = cis_by_code(store, kind, value)
    else:
        mode = "text" if by == "auto" else by
        cis_list = search_cis(store, value, by=mode, limit=limit, marketed_only=marketed_only)
    return medication_views(store, cis_list[:limit])


def thesaurus_in_force(store: Store | None) -> Thesaurus:
    """The last edition imported on this appliance, else the bundled data file."""
    row = (
        store.db.execute("SELECT max(import_id) FROM med_thesaurus").fetchone()
        if store is not None
        else None
    )
    if store is None or row is None or row[0] is None:
        return load_thesaurus()
    key = f"store:{store.path}:{row[0]}"
    found = cached_thesaurus(key)
    if found is not None:
        return found
    stored = stored_thesaurus(store)
    assert stored is not None
    return load_thesaurus(stored[1], cache_key=key)


def drug_keys(store: Store, thesaurus: Thesaurus, cis: str) -> tuple[str, set[str]] | None:
    """Label and thesaurus keys of a speciality, through its substances and its ATC code."""
    rows = speciality_rows(store, [cis])
    if not rows:
        return None
    codes = [row["substance_code"] for row in rows_for(store, "med_components", [cis])]
    keys = thesaurus.keys_for_substance_codes(codes)
    if rows[0]["atc"]:
        keys |= thesaurus.keys_for_atc(rows[0]["atc"])
    return f"{cis} {rows[0]['name']}", keys
