"""Pure rules about workstations (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable

from services.workstations.models import Workstation, WorkstationCreate, WorkstationUpdate


def from_create(body: WorkstationCreate) -> Workstation:
    return Workstation(
        code=body.code,
        label=body.label.strip(),
        location=body.location.strip(),
        card_reader=body.card_reader.strip() if body.card_reader else None,
        terminal=body.terminal,
        active=body.active,
    )


def from_update(code: str, body: WorkstationUpdate) -> Workstation:
    return Workstation(
        code=code,
        label=body.label.strip(),
        location=body.location.strip(),
        card_reader=body.card_reader.strip() if body.card_reader else None,
        terminal=body.terminal,
        active=body.active,
    )


def reader_conflict(candidate: Workstation, others: Iterable[Workstation]) -> str | None:
    """A reader belongs to one active counter, or card events would reach two screens.

    Returns the code of the other active workstation already using the reader, if any.
    """
    if not candidate.active or candidate.card_reader is None:
        return None
    for other in others:
        if (
            other.code != candidate.code
            and other.active
            and other.card_reader == candidate.card_reader
        ):
            return other.code
    return None


def terminal_conflict(candidate: Workstation, others: Iterable[Workstation]) -> str | None:
    """A terminal is one counter: two active workstations on it would make its card reader
    ambiguous. Returns the code of the other active workstation on the terminal, if any."""
    if not candidate.active or candidate.terminal is None:
        return None
    for other in others:
        if other.code != candidate.code and other.active and other.terminal == candidate.terminal:
            return other.code
    return None


def reader_of_terminal(terminal: str, workstations: Iterable[Workstation]) -> str | None:
    """The card reader of the active workstation on ``terminal`` (None: no such workstation,
    or one without a reader)."""
    for workstation in workstations:
        if workstation.active and workstation.terminal == terminal:
            return workstation.card_reader
    return None
