"""Persistence of patients, dispensing lines and BPM cycles in the domain store.

Each entity is a versioned table of sealed documents. Next to it, a small projection table
holds what queries need (folded names, birth date, blind indexes, pseudonym; patient id and
date of a dispensing line; patient and status of a BPM cycle), written in the same
transaction as the version it reflects, so a search never sees a half-written change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from appliance.outbox import enqueue
from appliance.store import Migration, Store, Versioned, VersionedTable
from services.patients.bpm import StoredBpmCycle, cycle_replica
from services.patients.logic import BPM_STREAM, PATIENT_STREAM, patient_replica
from services.patients.models import StoredDispensing, StoredPatient

COMPONENT = "patients"
PATIENTS: VersionedTable[StoredPatient] = VersionedTable("patients", StoredPatient)
DISPENSINGS: VersionedTable[StoredDispensing] = VersionedTable(
    "patient_dispensings", StoredDispensing
)
BPM_CYCLES: VersionedTable[StoredBpmCycle] = VersionedTable("bpm_cycles", StoredBpmCycle)

MAX_RESULTS = 100

_PROJECTIONS = """
CREATE TABLE patient_search (
    patient_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    names_folded TEXT NOT NULL,
    family_folded TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    nir_index TEXT,
    ins_index TEXT,
    pseudonym TEXT NOT NULL UNIQUE
) WITHOUT ROWID;
CREATE INDEX patient_search_birth_date ON patient_search (birth_date);
CREATE UNIQUE INDEX patient_search_nir ON patient_search (nir_index) WHERE nir_index IS NOT NULL;
CREATE UNIQUE INDEX patient_search_ins ON patient_search (ins_index) WHERE ins_index IS NOT NULL;
CREATE TABLE patient_dispensing_index (
    dispensing_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    dispensed_on TEXT NOT NULL,
    voided INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX patient_dispensing_by_patient
    ON patient_dispensing_index (patient_id, dispensed_on);
CREATE TABLE bpm_cycle_index (
    cycle_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    year INTEGER NOT NULL,
    status TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX bpm_cycle_by_patient ON bpm_cycle_index (patient_id, year)
"""

MIGRATIONS: tuple[Migration, ...] = (
    PATIENTS.create_table_migration(COMPONENT, 1),
    DISPENSINGS.create_table_migration(COMPONENT, 2),
    BPM_CYCLES.create_table_migration(COMPONENT, 3),
    Migration.sql(COMPONENT, 4, "create patient, dispensing and BPM projections", _PROJECTIONS),
)


class DuplicateIdentifierError(Exception):
    """Another patient already has this NIR or INS (identity vigilance: no duplicates)."""

    def __init__(self, field: str, other_id: str) -> None:
        super().__init__(f"another patient record ({other_id}) already has this {field.upper()}")
        self.field = field
        self.other_id = other_id


@dataclass(frozen=True)
class SearchRow:
    """The projection of one patient version, as search needs it."""

    names_folded: str
    family_folded: str
    birth_date: date


# --------------------------------------------------------------------------- patients


def save_patient(
    store: Store,
    stored: StoredPatient,
    row: SearchRow,
    *,
    actor: str,
    expected_version: int,
) -> Versioned[StoredPatient]:
    """Append a version and refresh its search row in one transaction."""
    with store.write() as db:
        for field in ("nir", "ins"):
            value = stored.blind.get(field)
            if value is None:
                continue
            other = db.execute(
                f"SELECT patient_id FROM patient_search WHERE {field}_index = ? "  # noqa: S608
                "AND patient_id != ?",
                [value, stored.patient_id],
            ).fetchone()
            if other is not None:
                raise DuplicateIdentifierError(field, str(other[0]))
        saved = PATIENTS.append(
            db, stored.patient_id, stored, actor=actor, expected_version=expected_version
        )
        db.execute(
            "INSERT INTO patient_search (patient_id, version, names_folded, family_folded, "
            "birth_date, nir_index, ins_index, pseudonym) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (patient_id) DO UPDATE SET version = excluded.version, "
            "names_folded = excluded.names_folded, family_folded = excluded.family_folded, "
            "birth_date = excluded.birth_date, nir_index = excluded.nir_index, "
            "ins_index = excluded.ins_index, pseudonym = excluded.pseudonym",
            [
                stored.patient_id,
                saved.version,
                row.names_folded,
                row.family_folded,
                row.birth_date.isoformat(),
                stored.blind.get("nir"),
                stored.blind.get("ins"),
                stored.pseudonym,
            ],
        )
        enqueue(
            db,
            stream=PATIENT_STREAM,
            kind="patient.version",
            payload=patient_replica(stored, saved.version),
            idempotency_key=f"patient:{stored.pseudonym}:{saved.version}",
        )
        return saved


def get_patient(store: Store, patient_id: str) -> Versioned[StoredPatient] | None:
    return PATIENTS.get(store.db, patient_id)


def patient_history(store: Store, patient_id: str) -> list[Versioned[StoredPatient]]:
    return PATIENTS.history(store.db, patient_id)


def search_patients(
    store: Store,
    *,
    terms: list[str],
    birth_date: date | None,
    nir_index: str | None,
    ins_index: str | None,
    limit: int,
) -> list[Versioned[StoredPatient]]:
    """Patients matching every criterion given: each name term as a substring of the
    folded names, exact birth date, exact NIR/INS through their blind index."""
    clauses: list[str] = []
    params: list[str | int] = []
    for term in terms:
        clauses.append("instr(names_folded, ?) > 0")
        params.append(term)
    if birth_date is not None:
        clauses.append("birth_date = ?")
        params.append(birth_date.isoformat())
    if nir_index is not None:
        clauses.append("nir_index = ?")
        params.append(nir_index)
    if ins_index is not None:
        clauses.append("ins_index = ?")
        params.append(ins_index)
    if not clauses:
        raise ValueError("a patient search needs at least one criterion")
    where = " AND ".join(clauses)
    rows = store.db.execute(
        f"SELECT patient_id FROM patient_search WHERE {where} "  # noqa: S608
        "ORDER BY family_folded, names_folded, patient_id LIMIT ?",
        [*params, min(limit, MAX_RESULTS)],
    ).fetchall()
    found = (PATIENTS.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None]


def patient_for_pseudonym(store: Store, pseudonym: str) -> str | None:
    row = store.db.execute(
        "SELECT patient_id FROM patient_search WHERE pseudonym = ?", [pseudonym]
    ).fetchone()
    return str(row[0]) if row else None


# --------------------------------------------------------------------------- dispensings


def save_dispensing(
    store: Store,
    stored: StoredDispensing,
    *,
    actor: str,
    expected_version: int,
    voided: bool = False,
) -> Versioned[StoredDispensing]:
    with store.write() as db:
        saved = DISPENSINGS.append(
            db,
            stored.dispensing_id,
            stored,
            actor=actor,
            expected_version=expected_version,
            deleted=voided,
        )
        db.execute(
            "INSERT INTO patient_dispensing_index (dispensing_id, patient_id, dispensed_on, "
            "voided) VALUES (?, ?, ?, ?) ON CONFLICT (dispensing_id) DO UPDATE SET "
            "dispensed_on = excluded.dispensed_on, voided = excluded.voided",
            [
                stored.dispensing_id,
                stored.patient_id,
                stored.entry.dispensed_on.isoformat(),
                int(voided),
            ],
        )
        return saved


def get_dispensing(store: Store, dispensing_id: str) -> Versioned[StoredDispensing] | None:
    return DISPENSINGS.get(store.db, dispensing_id)


def dispensings_of(
    store: Store, patient_id: str, *, since: date | None, limit: int, offset: int
) -> list[Versioned[StoredDispensing]]:
    """Live (not voided) lines of a patient, most recent first."""
    rows = store.db.execute(
        "SELECT dispensing_id FROM patient_dispensing_index WHERE patient_id = ? "
        "AND voided = 0 AND dispensed_on >= ? "
        "ORDER BY dispensed_on DESC, dispensing_id LIMIT ? OFFSET ?",
        [patient_id, (since or date.min).isoformat(), limit, offset],
    ).fetchall()
    found = (DISPENSINGS.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None]


# --------------------------------------------------------------------------- BPM cycles


def save_cycle(
    store: Store, stored: StoredBpmCycle, *, actor: str, expected_version: int
) -> Versioned[StoredBpmCycle]:
    with store.write() as db:
        saved = BPM_CYCLES.append(
            db, stored.cycle_id, stored, actor=actor, expected_version=expected_version
        )
        db.execute(
            "INSERT INTO bpm_cycle_index (cycle_id, patient_id, year, status) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (cycle_id) DO UPDATE SET status = excluded.status",
            [stored.cycle_id, stored.cycle.patient_id, stored.cycle.year, stored.cycle.status],
        )
        row = db.execute(
            "SELECT pseudonym FROM patient_search WHERE patient_id = ?", [stored.cycle.patient_id]
        ).fetchone()
        if row is not None:  # a cycle always belongs to a stored patient (checked by callers)
            enqueue(
                db,
                stream=BPM_STREAM,
                kind="bpm.cycle.version",
                payload=cycle_replica(stored, saved.version, str(row[0])),
                idempotency_key=f"bpm:{stored.cycle_id}:{saved.version}",
            )
        return saved


def get_cycle(store: Store, cycle_id: str) -> Versioned[StoredBpmCycle] | None:
    return BPM_CYCLES.get(store.db, cycle_id)


def cycle_history(store: Store, cycle_id: str) -> list[Versioned[StoredBpmCycle]]:
    return BPM_CYCLES.history(store.db, cycle_id)


def cycles_of(store: Store, patient_id: str) -> list[Versioned[StoredBpmCycle]]:
    """Every cycle of a patient, oldest year first."""
    rows = store.db.execute(
        "SELECT cycle_id FROM bpm_cycle_index WHERE patient_id = ? ORDER BY year, cycle_id",
        [patient_id],
    ).fetchall()
    found = (BPM_CYCLES.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None]


def open_cycles(store: Store) -> list[Versioned[StoredBpmCycle]]:
    """Every cycle still in progress (the follow-ups to-do list reads their plans)."""
    rows = store.db.execute(
        "SELECT cycle_id FROM bpm_cycle_index WHERE status = 'in_progress' ORDER BY cycle_id"
    ).fetchall()
    found = (BPM_CYCLES.get(store.db, str(row[0])) for row in rows)
    return [item for item in found if item is not None]
