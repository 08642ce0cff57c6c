"""Errors of the storage layer, each with a message an operator can act on."""


class StoreError(Exception):
    """Base class: the store cannot do what was asked."""


class StoreKeyError(StoreError):
    """The database exists but the key does not open it (or the file is not a database)."""


class StoreMissingError(StoreError):
    """The database file does not exist and the caller did not ask to create it."""


class StoreSchemaError(StoreError):
    """The schema is not at the version this software expects (pending or unknown migration)."""


class VersionConflictError(StoreError):
    """An update was based on a version that is no longer the latest one."""

    def __init__(self, entity: str, entity_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"{entity} {entity_id}: update based on version {expected}, latest is {actual}"
        )
        self.entity = entity
        self.entity_id = entity_id
        self.expected = expected
        self.actual = actual
