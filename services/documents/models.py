"""The document model every renderer reads, the stored document and the API shapes.

A document is built once as a frozen :class:`DocumentModel` (a title, the pharmacy, a
sequence of blocks) and then rendered to PDF, DOCX and HTML: the three files cannot say
different things because none of the renderers composes text of its own.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

DocumentKind = Literal["synthesis", "plan_de_prise", "fiche_conseil", "compte_rendu"]
DocumentFormat = Literal["pdf", "docx", "html"]
ExportKind = Literal["bpm-status", "findings"]
PatientRef = Annotated[
    str,
    msgspec.Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]
DocumentId = Annotated[str, msgspec.Meta(pattern=r"^doc-[0-9a-f]{20}$")]
CycleRef = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
AnalysisRef = Annotated[str, msgspec.Meta(pattern=r"^an-[0-9a-f]{16}$")]
GenerationRef = Annotated[str, msgspec.Meta(pattern=r"^gen-[0-9a-f]{32}$")]

MEDIA_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "html": "text/html; charset=utf-8",
}

# --------------------------------------------------------------------------- the model


class Pharmacy(msgspec.Struct, frozen=True, kw_only=True):
    """The pharmacy's identity as configured (printed in every header)."""

    name: str
    address_lines: tuple[str, ...] = ()
    finess: str | None = None
    phone: str | None = None
    logo: bytes | None = None
    """PNG or JPEG bytes (read from ``pharmacy_logo``); an image carries no text."""
    logo_type: Literal["png", "jpeg"] | None = None


class Heading(msgspec.Struct, frozen=True, kw_only=True, tag="heading"):
    text: str
    level: Literal[1, 2, 3] = 2


class Paragraph(msgspec.Struct, frozen=True, kw_only=True, tag="paragraph"):
    text: str
    style: Literal["normal", "large", "small", "emphasis"] = "normal"


class Table(msgspec.Struct, frozen=True, kw_only=True, tag="table"):
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    widths: tuple[float, ...] = ()
    """Relative column widths (they are scaled to the page); empty: equal widths."""
    large: bool = False
    """Large type (plan de prise, for people with poor eyesight)."""


class AnswerBox(msgspec.Struct, frozen=True, kw_only=True, tag="answer"):
    """Room for the GP's answer to one proposal: accepted / refused, and a comment."""

    label: str
    choices: tuple[str, ...] = ("Acceptée", "Refusée")


Block = Heading | Paragraph | Table | AnswerBox


class DocumentModel(msgspec.Struct, frozen=True, kw_only=True):
    kind: DocumentKind
    template_version: str
    title: str
    pharmacy: Pharmacy
    blocks: tuple[Block, ...]
    footer: str
    created_on: date


# --------------------------------------------------------------------------- inputs (pure)


class TreatmentRow(msgspec.Struct, frozen=True, kw_only=True):
    """One active line as the documents print it; empty strings when unknown."""

    product: str
    dci: str
    dose: str
    posology: str
    since: date | None
    morning: str = ""
    noon: str = ""
    evening: str = ""
    bedtime: str = ""
    as_needed: str = ""
    times_unknown: bool = False
    """The posology gives a count per day but no time of day: the plan must not guess."""


class FindingItem(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    rule: str
    severity: str
    message: str
    recommendation: str
    recommendation_gp: str
    sources: tuple[str, ...]


class StepInfo(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    performed_on: date
    pharmacist: str
    notes: str | None
    treatments_changed: bool | None
    cycle_year: int


class PatientInfo(msgspec.Struct, frozen=True, kw_only=True):
    family_name: str
    given_names: str
    birth_date: date
    sex: str
    gp_name: str | None = None
    gp_rpps: str | None = None


# --------------------------------------------------------------------------- stored


class StoredDocument(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: DocumentKind
    format: DocumentFormat
    patient_id: str
    cycle_id: str | None
    template_version: str
    sha256: str
    size: int
    created_at: datetime
    created_by: str
    signed_from: str | None = None
    signer: str | None = None
    synthesis_source: str | None = None
    """``engine``, ``pharmacist`` (their own text) or the LLM generation id whose text the
    synthesis prints."""


# --------------------------------------------------------------------------- API shapes


class GenerateInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: DocumentKind
    patient_id: PatientRef
    format: DocumentFormat = "pdf"
    cycle_id: CycleRef | None = None
    """Required for ``fiche_conseil`` and ``compte_rendu`` (the BPM cycle)."""
    step_index: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    """``compte_rendu``: which recorded step (0 = first); default the last one."""
    analysis_id: AnalysisRef | None = None
    """Use a stored analysis instead of analysing the patient's record now."""
    generation_id: GenerationRef | None = None
    """A validated LLM ``bpm_synthesis`` draft of this patient (else the engine's words)."""
    synthesis_text: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)] | None = None
    """The pharmacist's own reviewed wording of the synthesis, printed as written (not with
    ``generation_id``)."""


class SignInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pin: Annotated[str, msgspec.Meta(min_length=4, max_length=16, pattern=r"^[0-9]+$")] | None = (
        None
    )
    """CPS card PIN (PKCS#11 signer); never stored nor logged."""
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class DocumentView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: DocumentKind
    format: DocumentFormat
    patient_id: str
    cycle_id: str | None
    template_version: str
    sha256: str
    size: int
    media_type: str
    filename: str
    created_at: datetime
    created_by: str
    signed_from: str | None
    signer: str | None
    synthesis_source: str | None


class VerificationView(msgspec.Struct, frozen=True, kw_only=True):
    document_id: str | None
    intact: bool
    valid: bool
    trusted: bool
    signer: str | None
    signed_at: datetime | None
    coverage: str
    summary: str
