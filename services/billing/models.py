"""Billing shapes: invoices of pharmacist acts, payments, request bodies and report views.

An invoice is written once (immutable) when the act is billed, with the shares of the
Assurance Maladie obligatoire (AMO), the complementary (AMC) and the patient; payments are
append-only rows against it. What is still owed is computed, never stored, so it cannot
drift from the payments.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

from services.sesam_vitale.models import (
    BpmStepKind,
    CheckView,
    Exoneration,
    FseState,
    FseView,
    LotView,
)

Cents = Annotated[int, msgspec.Meta(ge=0, le=100_000_000)]
PositiveCents = Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]
Uuid = Annotated[
    str,
    msgspec.Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]
Rpps = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{11}$")]
Reference = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[!-~ ]+$")]
Payer = Literal["amo", "amc", "patient"]
Method = Literal["noemie", "cash", "card", "cheque", "transfer"]
InvoiceStatus = Literal["open", "paid", "rejected"]


class InvoiceLine(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    label: str
    amount_cents: Cents
    amo_rate: int
    amo_cents: Cents
    amc_cents: Cents
    patient_cents: Cents


class Invoice(msgspec.Struct, frozen=True, kw_only=True):
    number: int
    patient_id: str
    issued_on: date
    fse_id: str
    fse_number: int
    act_key: str
    bpm_step: BpmStepKind
    remote: bool
    lines: tuple[InvoiceLine, ...]
    total_cents: Cents
    amo_cents: Cents
    amc_cents: Cents
    patient_cents: Cents
    amc_organisation: str | None = None
    tariff_edition: str
    test_tariff: bool = False
    created_at: datetime


class Payment(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    invoice_id: str
    payer: Payer
    amount_cents: Cents
    paid_on: date
    method: Method
    reference: str | None
    recorded_at: datetime
    recorded_by: str


class InvoiceView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    invoice: Invoice
    fse_state: FseState | None
    payments: list[Payment]
    paid_amo_cents: int
    paid_amc_cents: int
    paid_patient_cents: int
    outstanding_cents: int
    status: InvoiceStatus


# --------------------------------------------------------------------------- requests


class BillStep(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bill one done BPM step of a patient's cycle."""

    patient_id: Uuid
    bpm_cycle_id: Uuid
    step: BpmStepKind
    remote: bool = False
    """Done remotely (adds the remote-interview code; entretiens only)."""
    exoneration: Exoneration = "none"
    prescriber_rpps: Rpps | None = None
    """When a physician prescribed the BPM; by default the pharmacist is the prescriber."""


class BillResult(msgspec.Struct, frozen=True, kw_only=True):
    invoice: InvoiceView
    fse: FseView


class CheckRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    patient_id: Uuid
    kind: Literal["rights", "insi"]


class SignInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pin: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4,8}$")] | None = None
    """The CPS PIN: signs with the pharmacist's card in the reader. Without it, the signer
    configured on the appliance signs (software key for tests and demos)."""


class PaymentInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    payer: Literal["amc", "patient"]
    amount_cents: PositiveCents
    paid_on: date
    method: Literal["cash", "card", "cheque", "transfer"]
    reference: Reference | None = None


class ReturnInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=2_000_000)]
    """A NOEMIE-style return file (docs/sesam_vitale.md)."""


class ReturnResult(msgspec.Struct, frozen=True, kw_only=True):
    sha256: str
    duplicate: bool
    acknowledged_lots: list[str]
    rejected_lots: list[str]
    paid: list[str]
    rejected: list[str]
    ignored: list[str]
    payments_recorded: int


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    lot: LotView | None
    message: str


class RejectedItem(msgspec.Struct, frozen=True, kw_only=True):
    fse_id: str
    fse_number: int
    patient_id: str
    act_date: date
    code: str | None
    label: str | None
    invoice_id: str | None


class UnpaidItem(msgspec.Struct, frozen=True, kw_only=True):
    invoice_id: str
    invoice_number: int
    patient_id: str
    issued_on: date
    fse_state: FseState | None
    outstanding_amo_cents: int
    outstanding_amc_cents: int
    outstanding_patient_cents: int


class ActSummary(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    count: int
    total_cents: int


class MonthlySummary(msgspec.Struct, frozen=True, kw_only=True):
    month: str
    invoices: int
    total_cents: int
    amo_cents: int
    amc_cents: int
    patient_cents: int
    received_amo_cents: int
    received_amc_cents: int
    received_patient_cents: int
    outstanding_cents: int
    rejected_fse: int
    by_code: list[ActSummary]
    fse_states: dict[str, int]


class ChecksList(msgspec.Struct, frozen=True, kw_only=True):
    checks: list[CheckView]
