"""What a FHIR import answers: per entry, what was created, updated or rejected and why."""

from __future__ import annotations

from typing import Literal

import msgspec

Outcome = Literal["created", "updated", "unchanged", "referenced", "rejected", "not_stored"]


class EntryReport(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    resource_type: str | None
    full_url: str | None
    outcome: Outcome
    target: str | None = None
    """What it became, by type and id: ``patient/<id>``, ``prescription/<id>``..."""
    message: str | None = None


class ImportReport(msgspec.Struct, frozen=True, kw_only=True):
    bundle_type: str
    stored: bool
    """False when nothing was stored (a transaction bundle with a rejected entry)."""
    created: int
    updated: int
    rejected: int
    entries: list[EntryReport]
