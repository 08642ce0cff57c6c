"""Persistence of prescriptions, and the catalog reads that turn a line into substances.

Prescriptions are a versioned table (every change a version, with who and when) and a small
projection (patient, date, voided) written in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import services.medications as _catalog
from appliance.store import Migration, Store, Versioned, VersionedTable
from services.prescriptions.models import Product, StoredPrescription, StoredStatement

COMPONENT = "prescriptions"
PRESCRIPTIONS: VersionedTable[StoredPrescription] = VersionedTable(
    "prescriptions", StoredPrescription
)
STATEMENTS: VersionedTable[StoredStatement] = VersionedTable(
    "medication_statements", StoredStatement
)

_PROJECTION = """
CREATE TABLE prescription_index (
    prescription_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    prescribed_on TEXT NOT NULL,
    voided INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX prescription_by_patient ON prescription_index (patient_id, prescribed_on)
"""

MIGRATIONS: tuple[Migration, ...] = (
    PRESCRIPTIONS.create_table_migration(COMPONENT, 1),
    Migration.sql(COMPONENT, 2, "create the prescription projection", _PROJECTION),
    STATEMENTS.create_table_migration(COMPONENT, 3),
    Migration.sql(
        COMPONENT,
        4,
        "create the medication statement projection",
        "CREATE TABLE medication_statement_index (statement_id TEXT PRIMARY KEY, "
        "patient_id TEXT NOT NULL) WITHOUT ROWID; CREATE INDEX medication_statement_by_patient "
        "ON medication_statement_index (patient_id)",
    ),
)


def save(
    store: Store,
    stored: StoredPrescription,
    *,
    actor: str,
    expected_version: int,
    voided: bool = False,
) -> Versioned[StoredPrescription]:
    with store.write() as db:
        saved = PRESCRIPTIONS.append(
            db,
            stored.prescription_id,
            stored,
            actor=actor,
            expected_version=expected_version,
            deleted=voided,
        )
        db.execute(
            "INSERT INTO prescription_index (prescription_id, patient_id, prescribed_on, voided) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (prescription_id) DO UPDATE SET "
            "patient_id = excluded.patient_id, prescribed_on = excluded.prescribed_on, "
            "voided = excluded.voided",
            [
                stored.prescription_id,
                stored.prescription.patient_id,
                stored.prescription.prescribed_on.isoformat(),
                int(voided),
            ],
        )
        return saved


def get(store: Store, prescription_id: str) -> Versioned[StoredPrescription] | None:
    return PRESCRIPTIONS.get(store.db, prescription_id)


def history(store: Store, prescription_id: str) -> list[Versioned[StoredPrescription]]:
    return PRESCRIPTIONS.history(store.db, prescription_id)


def of_patient(
    store: Store, patient_id: str, *, limit: int = 1000, offset: int = 0
) -> list[Versioned[StoredPrescription]]:
    """A patient's live prescriptions, most recent first."""
    rows = store.db.execute(
        "SELECT prescription_id FROM prescription_index WHERE patient_id = ? AND voided = 0 "
        "ORDER BY prescribed_on DESC, prescription_id LIMIT ? OFFSET ?",
        [patient_id, limit, offset],
    ).fetchall()
    found = (PRESCRIPTIONS.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None]


def patients_with_prescriptions(store: Store) -> list[str]:
    rows = store.db.execute(
        "SELECT DISTINCT patient_id FROM prescription_index WHERE voided = 0 ORDER BY patient_id"
    ).fetchall()
    return [str(row[0]) for row in rows]


def save_statement(
    store: Store, stored: StoredStatement, *, actor: str, expected_version: int
) -> Versioned[StoredStatement]:
    with store.write() as db:
        saved = STATEMENTS.append(
            db, stored.statement_id, stored, actor=actor, expected_version=expected_version
        )
        db.execute(
            "INSERT OR IGNORE INTO medication_statement_index (statement_id, patient_id) "
            "VALUES (?, ?)",
            [stored.statement_id, stored.statement.patient_id],
        )
        return saved


def get_statement(store: Store, statement_id: str) -> Versioned[StoredStatement] | None:
    return STATEMENTS.get(store.db, statement_id)


def statements_of(store: Store, patient_id: str) -> list[Versioned[StoredStatement]]:
    rows = store.db.execute(
        "SELECT statement_id FROM medication_statement_index WHERE patient_id = ? "
        "ORDER BY statement_id",
        [patient_id],
    ).fetchall()
    found = (STATEMENTS.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None and not item.deleted]


# --------------------------------------------------------------------------- catalog reads
# Through the medications service's public lookup functions, never its tables.


def products(store: Store, cis_list: Sequence[str]) -> dict[str, Product]:
    """Catalog products by CIS, with their active moieties (a combination has several)."""
    return {
        cis: Product(cis=cis, name=item.name, atc=item.atc, substances=item.substances)
        for cis, item in _catalog.products(store, cis_list).items()
    }


def cis_for_cip13(store: Store, cip13: str) -> str | None:
    return _catalog.lookup_cis(store, cip13) if len(cip13) == 13 else None


def product_for(store: Store, cis: str | None, cip13: str | None) -> Product | None:
    """The product of a line: by CIS, else by CIP13; ``None`` when the catalog has neither
    (or when CIS and CIP13 disagree)."""
    from_box = cis_for_cip13(store, cip13) if cip13 else None
    if cis and from_box and cis != from_box:
        return None
    key = cis or from_box
    if key is None:
        return None
    return products(store, [key]).get(key)
