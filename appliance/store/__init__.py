"""Encrypted storage: SQLCipher databases used through sqlite-utils.

Public API: :class:`Store` (one database file), :class:`Migration` and
:func:`apply_migrations`, :class:`VersionedTable` for immutable entities with history, and the
errors a caller may need to tell apart.
"""

from appliance.store.errors import (
    StoreError,
    StoreKeyError,
    StoreMissingError,
    StoreSchemaError,
    VersionConflictError,
)
from appliance.store.migrations import (
    Migration,
    applied_versions,
    apply_migrations,
    pending_migrations,
)
from appliance.store.sqlcipher import Store, rekey_database
from appliance.store.versioned import Versioned, VersionedTable

__all__ = [
    "Migration",
    "Store",
    "StoreError",
    "StoreKeyError",
    "StoreMissingError",
    "StoreSchemaError",
    "VersionConflictError",
    "Versioned",
    "VersionedTable",
    "applied_versions",
    "apply_migrations",
    "pending_migrations",
    "rekey_database",
]
