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
        active=body.active,
    )


def from_update(code: str, body: WorkstationUpdate) -> Workstation:
    return Workstation(
        code=code,
        label=body.label.strip(),
        location=body.location.strip(),
        card_reader=body.card_reader.strip() if body.card_reader else None,
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
