"""Shapes of the SESAM-Vitale service: tariff data, teleservice checks, FSE, lots, returns.

Everything is frozen: a state change of an FSE or a lot is a new stored version (who, when,
what), so the life of an invoice sent to the Assurance Maladie is its version history.
Amounts are integer euro cents end to end: a float never touches money.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

Cents = Annotated[int, msgspec.Meta(ge=0, le=100_000_000)]
Rate = Annotated[int, msgspec.Meta(ge=0, le=100)]
Nir = Annotated[
    str, msgspec.Meta(pattern=r"^[0-9]{13}[0-9]{2}$|^[12][0-9]{4}2[AB][0-9]{6}[0-9]{2}$")
]
Rpps = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{11}$")]
PatientRef = Annotated[
    str,
    msgspec.Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]

BpmStepKind = Literal[
    "adhesion", "recueil", "analyse", "transmission", "conseil", "suivi", "observance"
]
Exoneration = Literal["none", "ald"]
"""Why the ticket modérateur is waived: ``ald`` when the act relates to the patient's
affection de longue durée (declared by the pharmacist, checked against the coverage)."""

FseState = Literal["created", "signed", "sent", "acknowledged", "rejected", "paid"]
LotState = Literal["created", "sent", "acknowledged", "rejected"]
CheckKind = Literal["rights", "insi"]
CheckStatus = Literal["checked", "unchecked", "not_found"]

# --------------------------------------------------------------------------- tariff data


class TariffAct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One billable act of an edition; ``code``/``amount_eur``/``amo_rate`` are absent when
    the sources did not confirm them (``doubt`` says what is missing)."""

    key: str
    label: str
    bpm_steps: tuple[BpmStepKind, ...]
    interview: bool
    """An entretien with the patient (may be done remotely, with the remote code)."""
    sources: tuple[str, ...]
    code: str | None = None
    amount_eur: float | None = None
    amo_rate: Rate | None = None
    billed: bool = True
    doubt: str | None = None

    @property
    def confirmed(self) -> bool:
        return self.code is not None and self.amount_eur is not None and self.amo_rate is not None


class RemoteCode(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    code: str
    label: str
    sources: tuple[str, ...]
    amount_eur: float | None = None
    doubt: str | None = None


class TariffEdition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    valid_from: date
    title: str
    sources: tuple[str, ...]
    acts: tuple[TariffAct, ...]
    avenant: str | None = None
    signed: str | None = None
    approved_by: str | None = None
    journal_officiel: str | None = None
    notes: str | None = None
    remote: RemoteCode | None = None
    test_only: bool = False
    """Fictitious figures for tests and demos: never used for a real pharmacy."""
    origin: str = ""
    """The file it came from (filled by the loader)."""


class TariffFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    schema_version: Literal[1]
    editions: tuple[TariffEdition, ...]


# --------------------------------------------------------------------------- coverage


class CoverageFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the pricing needs from the patient's coverage on the act date."""

    amo_open: bool
    ald_open: bool
    amc_open: bool
    amc_organisation: str | None = None
    css: bool = False
    regime: str | None = None
    caisse: str | None = None
    centre: str | None = None


class PriceLine(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    label: str
    amount_cents: Cents
    amo_rate: Rate
    amo_cents: Cents
    amc_cents: Cents
    patient_cents: Cents


class Pricing(msgspec.Struct, frozen=True, kw_only=True):
    edition_id: str
    act_key: str
    lines: tuple[PriceLine, ...]
    total_cents: Cents
    amo_cents: Cents
    amc_cents: Cents
    patient_cents: Cents
    exoneration: Exoneration
    test_tariff: bool


# --------------------------------------------------------------------------- checks


class RightsAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """ADRi answer: the beneficiary's AMO rights (and what the simulator knows of AMC/ALD)."""

    status: Literal["found", "not_found"]
    nir: str | None = None
    regime: str | None = None
    caisse: str | None = None
    centre: str | None = None
    rights_from: date | None = None
    rights_until: date | None = None
    ald: bool = False
    ald_until: date | None = None
    amc_organisation: str | None = None
    amc_until: date | None = None
    css: bool = False
    reference: str | None = None


class InsiAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """INSi answer: the INS (matricule and OID) and the traits of the national referential."""

    status: Literal["found", "not_found", "multiple"]
    matricule: str | None = None
    oid: str | None = None
    birth_family_name: str | None = None
    given_names: str | None = None
    birth_date: date | None = None
    sex: Literal["F", "M", "I"] | None = None
    birth_place_code: str | None = None
    reference: str | None = None


class CheckRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One rights or identity check of a patient: done (``checked``/``not_found``) or queued
    while the teleservice is unreachable (``unchecked``, re-run by the worker)."""

    kind: CheckKind
    patient_id: str
    status: CheckStatus
    requested_at: datetime
    attempts: int = 1
    checked_at: datetime | None = None
    last_error: str | None = None
    rights: RightsAnswer | None = None
    insi: InsiAnswer | None = None


class CheckView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: CheckKind
    patient_id: str
    status: CheckStatus
    requested_at: datetime
    attempts: int
    checked_at: datetime | None
    last_error: str | None
    rights: RightsAnswer | None
    insi: InsiAnswer | None
    version: int
    message: str
    """For the counter, in French."""


# --------------------------------------------------------------------------- FSE


class FseSignature(msgspec.Struct, frozen=True, kw_only=True):
    algorithm: str
    value: str
    """Base64 of the signature over :func:`services.sesam_vitale.logic.fse_signed_bytes`."""
    certificate_pem: str
    signer_name: str
    signer_rpps: str | None = None
    signed_at: datetime


class Beneficiary(msgspec.Struct, frozen=True, kw_only=True):
    nir: str
    birth_date: date
    regime: str | None = None
    caisse: str | None = None
    centre: str | None = None


class Fse(msgspec.Struct, frozen=True, kw_only=True):
    """Feuille de soins électronique for pharmacist acts (BPM steps)."""

    number: int
    patient_id: str
    beneficiary: Beneficiary
    act_date: date
    bpm_cycle_id: str
    bpm_step: BpmStepKind
    remote: bool
    pricing: Pricing
    pharmacy_name: str
    pharmacy_am_number: str
    executant: str
    """User id of the pharmacist who performed the step."""
    prescriber_rpps: str | None = None
    """``None``: the pharmacist is the prescriber (conventional rule for these acts)."""
    amc_organisation: str | None = None
    state: FseState = "created"
    signature: FseSignature | None = None
    lot_id: str | None = None
    rejection_code: str | None = None
    rejection_label: str | None = None
    paid_cents: Cents | None = None
    paid_on: date | None = None
    created_at: datetime


class FseView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: int
    recorded_at: datetime
    recorded_by: str
    fse: Fse


class Lot(msgspec.Struct, frozen=True, kw_only=True):
    number: int
    fse_ids: tuple[str, ...]
    total_amo_cents: Cents
    state: LotState = "created"
    outbox_sequence: int | None = None
    created_at: datetime
    ack_code: str | None = None
    ack_label: str | None = None


class LotView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: int
    recorded_at: datetime
    recorded_by: str
    lot: Lot


# --------------------------------------------------------------------------- returns


class ArlRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Accusé de réception logique of one lot."""

    lot_id: str
    accepted: bool
    code: str
    label: str


class PaymentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One FSE in a payment return: paid (amount, date) or rejected (code, label)."""

    lot_id: str
    fse_id: str
    fse_number: int
    paid: bool
    amount_cents: Cents
    payment_date: date | None
    code: str
    label: str


class ReturnFile(msgspec.Struct, frozen=True, kw_only=True):
    emitter: str
    created_on: date
    acks: tuple[ArlRecord, ...]
    payments: tuple[PaymentRecord, ...]
