"""Workstation entity and its API shapes (frozen: a change is a new version)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

Code = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$(?!\n)", description="slug")]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=80, pattern=r"\S")]
Location = Annotated[str, msgspec.Meta(max_length=120)]
ReaderName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")]
TerminalId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9a-f]{16}$(?!\n)",
        description="the terminal id shown on this counter's login page (16 hex digits)",
    ),
]
Version = Annotated[int, msgspec.Meta(ge=0)]


class Workstation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A counter terminal, e.g. ``comptoir-1`` labelled « Comptoir 1 ».

    ``terminal`` ties it to a browser: the id its login page shows (the ``hygie_device``
    cookie of the identity service); card reads and the CPS login from that browser then use
    ``card_reader``.
    """

    code: Code
    label: Label
    location: Location = ""
    card_reader: ReaderName | None = None
    terminal: TerminalId | None = None
    active: bool = True


class WorkstationCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    code: Code
    label: Label
    location: Location = ""
    card_reader: ReaderName | None = None
    terminal: TerminalId | None = None
    active: bool = True


class WorkstationUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A full replacement, based on ``expected_version`` (optimistic concurrency)."""

    expected_version: Version
    label: Label
    location: Location = ""
    card_reader: ReaderName | None = None
    terminal: TerminalId | None = None
    active: bool = True


class WorkstationView(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    label: str
    location: str
    card_reader: str | None
    terminal: str | None
    active: bool
    version: int
    recorded_at: datetime
    recorded_by: str
