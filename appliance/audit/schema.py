"""Tables of the audit database (its own SQLCipher file, component ``audit``).

The triggers refusing UPDATE and DELETE are defence in depth against bugs and casual edits;
anyone with the database key can drop them, which is why verification, not the schema, is
what proves the log intact.
"""

from __future__ import annotations

from appliance.store import Migration

COMPONENT = "audit"

_CREATE_TABLES = """
CREATE TABLE audit_entries (
    seq INTEGER PRIMARY KEY CHECK (seq >= 1),
    recorded_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    outcome TEXT NOT NULL,
    request_id TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
-- "Who accessed this record?" is the question patients and the CNIL ask of an audit log.
CREATE INDEX audit_entries_object ON audit_entries (object_type, object_id);
CREATE TABLE audit_checkpoints (
    seq INTEGER PRIMARY KEY CHECK (seq >= 1),
    entry_hash TEXT NOT NULL,
    signed_at TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END
"""

AUDIT_MIGRATIONS: list[Migration] = [
    Migration.sql(COMPONENT, 1, "create audit entries and checkpoints", _CREATE_TABLES),
]
