"""Prescriptions (ordonnances): prescriber, lines with structured posology, renewals, validity.

Frozen structs: a change is a new version of the whole prescription (VersionedTable), so the
history says who changed what and when.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

from services.patients.models import FieldError as FieldError  # one error shape

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"\S")]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Version = Annotated[int, msgspec.Meta(ge=0)]

TimeOfDay = Literal["morning", "noon", "evening", "bedtime"]
DurationUnit = Literal["day", "week", "month"]
Severity = Literal["error", "warning", "info"]


class Prescriber(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    rpps: Code | None = None
    """11 digits, Luhn key (checked by logic)."""
    specialty: Label | None = None


class Duration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    value: Annotated[int, msgspec.Meta(ge=1, le=3650)]
    unit: DurationUnit = "day"


class Posology(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Structured posology; ``text`` keeps the prescriber's words as written."""

    dose: Annotated[float, msgspec.Meta(gt=0, le=100_000)] | None = None
    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=30)] | None = None
    """Unit of ``dose``: a unit of the form (``comprimé``, ``gélule``) or of mass (``mg``)."""
    times_per_day: Annotated[float, msgspec.Meta(gt=0, le=48)] | None = None
    times_of_day: Annotated[tuple[TimeOfDay, ...], msgspec.Meta(max_length=4)] = ()
    duration: Duration | None = None
    as_needed: bool = False
    """« si besoin »."""
    sequence: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    """Order among a line's dosage instructions (FHIR ``Dosage.sequence``): instructions
    with the same number apply together (1 tablet in the morning + 2 in the evening), a
    higher number follows the lower ones (a taper); ``None``: applies together."""


class PrescriptionLine(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A catalog item (CIS and/or CIP13) or a free-text product, with its posology."""

    cis: Code | None = None
    cip13: Code | None = None
    label: Label | None = None
    posology: Posology = Posology()
    more_posologies: Annotated[tuple[Posology, ...], msgspec.Meta(max_length=10)] = ()
    """Further dosage instructions of the same line (a different dose in the evening, the
    next step of a taper), as FHIR carries several ``dosageInstruction``."""
    original_text: Text | None = None
    substitutable: bool = True


class Prescription(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    patient_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    prescriber: Prescriber
    prescribed_on: date
    lines: Annotated[tuple[PrescriptionLine, ...], msgspec.Meta(max_length=100)] = ()
    renewals: Annotated[int, msgspec.Meta(ge=0, le=12)] = 0
    """How many times the prescription may be dispensed again (« à renouveler n fois »)."""
    valid_until: date | None = None
    """Last day a first dispensing is allowed; by default three months after the date."""


class PrescriptionUpdate(Prescription, frozen=True, kw_only=True, forbid_unknown_fields=True):
    expected_version: Version


class StoredPrescription(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    prescription_id: str
    prescription: Prescription


class Product(msgspec.Struct, frozen=True, kw_only=True):
    """What the catalog says about a line's product: its active moieties and ATC code."""

    cis: str
    name: str
    atc: str | None
    substances: tuple[tuple[str, str], ...]
    """(BDPM substance code, name) of each active moiety (a combination has several)."""


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    severity: Severity
    message: str
    line: int | None = None


class ValidationReport(msgspec.Struct, frozen=True, kw_only=True):
    """What was checked, as of which day: findings, and checks that could not be made."""

    as_of: date
    valid: bool
    findings: list[Finding]
    posology_range: list[str]
    """Per line: ``checked`` or ``not checked: <why>``."""


class PrescriptionView(Prescription, frozen=True, kw_only=True):
    id: str
    version: int
    recorded_at: datetime
    recorded_by: str
    deleted: bool
    treatment_end: date
    validation: ValidationReport


StatementStatus = Literal[
    "active",
    "completed",
    "entered-in-error",
    "intended",
    "stopped",
    "on-hold",
    "unknown",
    "not-taken",
]
"""FHIR R4 MedicationStatement statuses."""


class MedicationStatement(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A medicine the patient takes or took, whoever prescribed it (self-medication, another
    pharmacy, a hospital): what the BPM interview collects, and FHIR MedicationStatement."""

    patient_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    status: StatementStatus = "active"
    cis: Code | None = None
    cip13: Code | None = None
    label: Label | None = None
    posology: Posology = Posology()
    original_text: Text | None = None
    effective_start: date | None = None
    effective_end: date | None = None
    asserted_on: date | None = None


class StoredStatement(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    statement_id: str
    statement: MedicationStatement
