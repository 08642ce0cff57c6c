"""Shapes of prescription import: what OCR and extraction yield, and the draft under review.

The extraction result is the public contract of ``hygie prescriptions extract`` (docs/
document_import.md): field names are fixed, unknown values are ``None`` (JSON ``null``).
Drafts are frozen: a correction is a new version of the whole draft (VersionedTable).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

TimeOfDay = Literal["morning", "noon", "evening", "bedtime"]
DurationUnit = Literal["day", "week", "month"]
DraftStatus = Literal["draft", "validated", "rejected"]
SourceKind = Literal["scan", "pdf", "csv", "fhir"]

Short = Annotated[str, msgspec.Meta(max_length=200)]
Confidence = Annotated[float, msgspec.Meta(ge=0, le=1)]


class Word(msgspec.Struct, frozen=True, kw_only=True):
    """One word as Tesseract read it, with its confidence (0-100) and its box on the page."""

    text: str
    confidence: float
    line: int
    """Index of the text line on its page (page-wide, top to bottom)."""
    left: int = 0
    top: int = 0
    width: int = 0
    height: int = 0


class PageText(msgspec.Struct, frozen=True, kw_only=True):
    """The text of one page: from the PDF text layer (confidence 100) or from OCR."""

    number: int
    lines: tuple[str, ...]
    line_confidences: tuple[float, ...]
    """Mean word confidence (0-100) of each line."""
    words: tuple[Word, ...] = ()
    source: Literal["ocr", "text-layer"] = "ocr"
    width: int = 0
    height: int = 0


class ParsedPosology(msgspec.Struct, frozen=True, kw_only=True):
    """What the posology parser understood; every field ``None`` when not written."""

    dose: float | None = None
    unit: str | None = None
    per_day: float | None = None
    times: tuple[TimeOfDay, ...] = ()
    duration_value: int | None = None
    duration_unit: DurationUnit | None = None
    as_needed: bool = False
    quantity: str | None = None
    """« QSP 3 mois » as written (normalised spaces)."""
    renewals: int | None = None
    """« renouvelable 2 fois » → 2; « renouvelable » without a count → None."""
    renewable: bool = False
    non_substitutable: bool = False

    @property
    def duration_days(self) -> int | None:
        """Duration in days: a week is 7 days, a month 30 (the usual dispensing reading of
        « 1 mois »; the exact unit is kept in ``duration_unit``)."""
        if self.duration_value is None or self.duration_unit is None:
            return None
        factor = {"day": 1, "week": 7, "month": 30}[self.duration_unit]
        return self.duration_value * factor


class PosologyOut(msgspec.Struct, frozen=True, kw_only=True):
    """Posology as the contract prints it."""

    dose: float | None
    unit: str | None
    per_day: float | None
    times: list[TimeOfDay] | None
    duration_days: int | None
    as_needed: bool


class LineOut(msgspec.Struct, frozen=True, kw_only=True):
    """One prescription line as the contract prints it."""

    text: str
    cis: str | None
    cip13: str | None
    substance: str | None
    atc: str | None
    strength: str | None
    posology: PosologyOut
    confidence: float


class PersonOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str | None


class PrescriberOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str | None
    rpps: str | None


class Extraction(msgspec.Struct, frozen=True, kw_only=True):
    """The contract of ``hygie prescriptions extract`` (one JSON object per file)."""

    source: str
    prescriber: PrescriberOut
    date: str | None
    patient: PersonOut
    lines: list[LineOut]
    pages: int
    ocr_ms: int


# --------------------------------------------------------------------------- draft


class Field(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=False):
    """A value read from the document, with how sure the reading is (0-1)."""

    value: str | None = None
    confidence: Confidence = 0.0


class DraftLine(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One line of a draft: what was read, what it matched, what the reviewer set."""

    text: Annotated[str, msgspec.Meta(max_length=2000)]
    cis: Annotated[str, msgspec.Meta(pattern=r"^\d{8}$")] | None = None
    cip13: Annotated[str, msgspec.Meta(pattern=r"^\d{13}$")] | None = None
    label: Short | None = None
    """Catalog name of the matched product, or the product as written when unmatched."""
    substance: Short | None = None
    atc: Annotated[str, msgspec.Meta(max_length=7)] | None = None
    strength: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    form: Short | None = None
    dose: Annotated[float, msgspec.Meta(gt=0, le=100_000)] | None = None
    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=30)] | None = None
    per_day: Annotated[float, msgspec.Meta(gt=0, le=48)] | None = None
    times: Annotated[tuple[TimeOfDay, ...], msgspec.Meta(max_length=4)] = ()
    duration_value: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None
    duration_unit: DurationUnit | None = None
    as_needed: bool = False
    quantity: Short | None = None
    non_substitutable: bool = False
    match_score: Confidence = 0.0
    """Similarity of the written product to the catalog entry (0-1)."""
    confidence: Confidence = 0.0
    """Overall confidence of the line: the lower of OCR and catalog match."""
    page: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    box: tuple[Confidence, Confidence, Confidence, Confidence] | None = None
    """(left, top, right, bottom) of the line on its page image, as fractions of the page's
    width and height: where the UI highlights it."""


class DraftContent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a reviewer can correct (the body of ``PUT``)."""

    patient_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    """The patient record the prescription will belong to (chosen by the reviewer)."""
    patient_name: Field = Field()
    patient_age: Annotated[int, msgspec.Meta(ge=0, le=130)] | None = None
    patient_weight_kg: Annotated[float, msgspec.Meta(gt=0, le=400)] | None = None
    prescriber_name: Field = Field()
    prescriber_rpps: Field = Field()
    prescriber_am: Field = Field()
    """Assurance Maladie or FINESS number as written (9 digits)."""
    prescriber_specialty: Field = Field()
    prescribed_on: Field = Field()
    """ISO date (YYYY-MM-DD)."""
    renewals: Annotated[int, msgspec.Meta(ge=0, le=12)] | None = None
    lines: Annotated[tuple[DraftLine, ...], msgspec.Meta(max_length=100)] = ()


class Draft(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A draft prescription, one version of it."""

    draft_id: str
    status: DraftStatus = "draft"
    source: SourceKind = "scan"
    filename: Annotated[str, msgspec.Meta(max_length=255)] = ""
    sha256: str = ""
    pages: int = 0
    ocr_ms: int = 0
    content: DraftContent = DraftContent()
    prescription_id: str | None = None
    """The prescription created at validation."""


class DraftView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: int
    recorded_at: datetime
    recorded_by: str
    status: DraftStatus
    source: SourceKind
    filename: str
    sha256: str
    pages: int
    ocr_ms: int
    content: DraftContent
    prescription_id: str | None
    page_urls: list[str]


class DraftUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Full replacement of the reviewable content, based on the version the reviewer saw."""

    expected_version: Annotated[int, msgspec.Meta(ge=1)]
    content: DraftContent


class DraftPatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Partial correction: the given top-level fields replace the draft's."""

    expected_version: Annotated[int, msgspec.Meta(ge=1)]
    patient_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    patient_name: Field | None = None
    prescriber_name: Field | None = None
    prescriber_rpps: Field | None = None
    prescribed_on: Field | None = None
    renewals: Annotated[int, msgspec.Meta(ge=0, le=12)] | None = None
    lines: Annotated[tuple[DraftLine, ...], msgspec.Meta(max_length=100)] | None = None


class ValidateRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The reviewer's confirmation: the version they checked against the scan."""

    expected_version: Annotated[int, msgspec.Meta(ge=1)]


class ValidationResult(msgspec.Struct, frozen=True, kw_only=True):
    draft_id: str
    prescription_id: str
    draft_version: int


class DraftSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: int
    status: DraftStatus
    source: SourceKind
    filename: str
    recorded_at: datetime
    lines: int


class CsvImportResult(msgspec.Struct, frozen=True, kw_only=True):
    drafts: list[str]
    rows: int
    errors: list[str]


class CatalogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What matching needs about a speciality (read from the medications service)."""

    cis: str
    name: str
    form: str
    atc: str | None
    substances: tuple[tuple[str, str], ...]
    """(substance name, dosage as written in CIS_COMPO) of each active moiety."""
    cip13s: tuple[str, ...] = ()
    """Marketed presentations."""


class Match(msgspec.Struct, frozen=True, kw_only=True):
    """A line matched to the catalog: a speciality (``cis``) or only a substance."""

    cis: str | None
    cip13: str | None
    name: str | None
    substance: str | None
    atc: str | None
    strength: str | None
    form: str | None
    score: float
    """0-1."""
