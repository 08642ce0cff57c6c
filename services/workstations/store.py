"""Persistence of workstations as versioned rows in the domain store."""

from __future__ import annotations

from appliance.store import Migration, Store, Versioned, VersionedTable
from services.workstations.logic import reader_conflict, reader_of_terminal, terminal_conflict
from services.workstations.models import Workstation

COMPONENT = "workstations"
TABLE: VersionedTable[Workstation] = VersionedTable("workstations", Workstation)
MIGRATIONS: tuple[Migration, ...] = (TABLE.create_table_migration(COMPONENT, 1),)

MAX_WORKSTATIONS = 1000


class ReaderInUseError(Exception):
    def __init__(self, reader: str, other: str) -> None:
        super().__init__(f"card reader '{reader}' is already attached to workstation '{other}'")
        self.other = other


class TerminalInUseError(Exception):
    def __init__(self, terminal: str, other: str) -> None:
        super().__init__(f"terminal '{terminal}' is already attached to workstation '{other}'")
        self.other = other


def save(
    store: Store, workstation: Workstation, *, actor: str, expected_version: int
) -> Versioned[Workstation]:
    """Append a version, checking the reader rule inside the same write transaction."""
    with store.write() as db:
        others = [item.entity for item in TABLE.current(db, limit=MAX_WORKSTATIONS)]
        other = reader_conflict(workstation, others)
        if other is not None:
            assert workstation.card_reader is not None
            raise ReaderInUseError(workstation.card_reader, other)
        other = terminal_conflict(workstation, others)
        if other is not None:
            assert workstation.terminal is not None
            raise TerminalInUseError(workstation.terminal, other)
        return TABLE.append(
            db, workstation.code, workstation, actor=actor, expected_version=expected_version
        )


def get(store: Store, code: str) -> Versioned[Workstation] | None:
    return TABLE.get(store.db, code)


def history(store: Store, code: str) -> list[Versioned[Workstation]]:
    return TABLE.history(store.db, code)


def list_current(store: Store, *, limit: int, offset: int) -> list[Versioned[Workstation]]:
    return TABLE.current(store.db, limit=limit, offset=offset)


def card_reader_of_terminal(store: Store, terminal: str) -> str | None:
    """The card reader of the workstation on ``terminal`` (its short id), if one is set."""
    current = TABLE.current(store.db, limit=MAX_WORKSTATIONS)
    return reader_of_terminal(terminal, (item.entity for item in current))
