"""Wire shapes of the cards API (the same fields as ``hygie cards read --json``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

ReaderName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


class ReadRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Read the card now in ``reader`` (or in the first reader holding one). The API does not
    wait for an insertion: the UI waits for the ``inserted`` event, then asks."""

    reader: ReaderName | None = None


class ReaderView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    card_present: bool
    mute: bool
    atr: str


class ReadersView(msgspec.Struct, frozen=True, kw_only=True):
    readers: list[ReaderView]


class BeneficiaryView(msgspec.Struct, frozen=True, kw_only=True):
    surname: str
    first_name: str
    birth_date: str
    nir: str
    patient_id: str | None
    """The patient record with this NIR, when there is one."""
    form: dict[str, Any] | None
    """A patient record pre-filled from the card, ready for ``POST /api/v1/patients``;
    ``None`` when the card's birth date is not a calendar date (« date lunaire »)."""


class VitaleView(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="vitale"):
    reader: str
    atr: str
    protocol: str
    beneficiaries: list[BeneficiaryView]
    apdus: int
    ms: int


class HolderView(msgspec.Struct, frozen=True, kw_only=True):
    surname: str
    first_name: str
    rpps: str | None
    adeli: str | None
    profession: str
    national_id: str


class CpsView(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="cps"):
    reader: str
    atr: str
    protocol: str
    holder: HolderView
    certificate_sha256: str
    not_after: str
    pin_tries_left: int | None
    apdus: int
    ms: int


class CardEventView(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    kind: str
    reader: str
    atr: str
    at: float
    message: str


class CardEventsView(msgspec.Struct, frozen=True, kw_only=True):
    events: list[CardEventView]
    last_seq: int
    """Pass it back as ``after`` on the next poll."""
    monitor_running: bool
    monitor_error: str | None


class PatientFromCardRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Find or create the patient record of one beneficiary of the Vitale card now in the
    reader (``beneficiary``: its position on the card, from 0)."""

    reader: ReaderName | None = None
    beneficiary: Annotated[int, msgspec.Meta(ge=0, le=11)] = 0


class PatientFromCardView(msgspec.Struct, frozen=True, kw_only=True):
    patient_id: str
    created: bool
    """True when the record was created from the card (provisional identity)."""
