"""Medication knowledge as frozen values: BDPM records, ATC assignments, thesaurus facts.

Catalog rows are reference data replaced wholesale at each import, so they are plain frozen
structs rather than versioned entities; what must survive an import (status changes, the
editions an analysis relied on) is recorded separately as history.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Literal

import msgspec


class Speciality(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``CIS_bdpm``: a medicinal product (spécialité) identified by its CIS."""

    cis: str
    name: str
    form: str
    routes: tuple[str, ...]
    amm_status: str
    amm_procedure: str
    marketed: bool
    amm_date: date | None
    bdm_status: str
    eu_number: str
    holders: str
    reinforced_monitoring: bool


class Presentation(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``CIS_CIP_bdpm``: a box, with its CIP codes, price and reimbursement."""

    cis: str
    cip7: str
    cip13: str
    label: str
    admin_status: str
    marketing_status: str
    marketed: bool
    marketing_date: date | None
    collectivities: bool | None
    reimbursement_rate: int | None
    price_cents: int | None
    price_with_fees_cents: int | None
    fees_cents: int | None
    reimbursement_text: str


class Component(msgspec.Struct, frozen=True, kw_only=True):
    """One substance of a speciality (``CIS_COMPO``); ``FT`` rows name the active moiety."""

    cis: str
    element: str
    substance_code: str
    substance_name: str
    dosage: str
    dosage_ref: str
    nature: str
    link_no: int | None


class GenericMembership(msgspec.Struct, frozen=True, kw_only=True):
    """A speciality's place in a generic group (0 princeps, 1 generic, 2 and 4 others)."""

    group_id: int
    label: str
    cis: str
    kind: int
    sort_no: int | None


class Condition(msgspec.Struct, frozen=True, kw_only=True):
    """A prescribing or dispensing condition (``CIS_CPD``)."""

    cis: str
    text: str


class Availability(msgspec.Struct, frozen=True, kw_only=True):
    """A shortage, tension, stop or return to supply (``CIS_CIP_Dispo_Spec``)."""

    cis: str
    cip13: str | None
    status_code: int
    status_label: str
    start_date: date | None
    updated_date: date | None
    end_date: date | None
    link: str


class MitmEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An ATC code given by ``CIS_MITM`` (médicaments d'intérêt thérapeutique majeur)."""

    cis: str
    atc: str
    name: str


class RejectedLine(msgspec.Struct, frozen=True, kw_only=True):
    """A line the importer did not load, with where it is and why."""

    file: str
    line_no: int
    reason: str
    excerpt: str


class FileReport(msgspec.Struct, frozen=True, kw_only=True):
    """How one BDPM file was read."""

    file: str
    encoding: str
    lines: int
    loaded: int
    blank: int
    rejected: tuple[RejectedLine, ...] = ()


class BdpmData(msgspec.Struct, frozen=True, kw_only=True):
    """Everything parsed from one BDPM folder, after cross-file checks."""

    specialities: tuple[Speciality, ...]
    presentations: tuple[Presentation, ...]
    components: tuple[Component, ...]
    generics: tuple[GenericMembership, ...]
    conditions: tuple[Condition, ...]
    availability: tuple[Availability, ...]
    mitm: tuple[MitmEntry, ...]
    files: tuple[FileReport, ...]


AtcSource = Literal[
    "direct", "generic_group", "composition_route", "composition", "composition_name"
]


class AtcAssignment(msgspec.Struct, frozen=True, kw_only=True):
    """An ATC code on a speciality and where it came from.

    ``direct``: CIS_MITM; ``generic_group``: another member of the same generic group;
    ``composition_route``/``composition``: a speciality with the same active substances (and
    route). ``evidence`` is the CIS (or ``group:<id>``) that the code was copied from.
    """

    cis: str
    atc: str
    source: AtcSource
    evidence: str


class CoverageFigures(msgspec.Struct, frozen=True, kw_only=True):
    """Share of the catalog that carries an ATC code (the clinical engine needs one)."""

    marketed_specialities: int
    marketed_with_atc: int
    marketed_non_homeopathic: int
    marketed_non_homeopathic_with_atc: int
    marketed_presentations: int
    marketed_presentations_with_atc: int
    reimbursed_presentations: int
    reimbursed_presentations_with_atc: int
    major_reimbursed_presentations: int
    major_reimbursed_presentations_with_atc: int
    by_source: dict[str, int]
    ambiguous: int

    @staticmethod
    def share(part: int, whole: int) -> float:
        return round(part / whole, 4) if whole else 0.0


class HistoryKind(StrEnum):
    ADDED = "speciality_added"
    REMOVED = "speciality_removed"
    SPECIALITY_STATUS = "speciality_status"
    PRESENTATION_STATUS = "presentation_status"
    PRICE = "price"
    AVAILABILITY_STARTED = "availability_started"
    AVAILABILITY_CHANGED = "availability_changed"
    AVAILABILITY_ENDED = "availability_ended"


class StatusChange(msgspec.Struct, frozen=True, kw_only=True):
    """One difference between two successive catalog imports."""

    cis: str
    cip13: str | None
    kind: HistoryKind
    old: str | None
    new: str | None


class CatalogSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the status history compares from one import to the next."""

    specialities: dict[str, str]
    """cis -> marketing status ("commercialisée" / "non commercialisée")."""
    presentations: dict[str, tuple[str, str, int | None]]
    """cip13 -> (cis, marketing status, price in cents)."""
    availability: dict[tuple[str, str], tuple[int, str, str]]
    """(cis, cip13 or "") -> (status code, label, start date)."""


class CatalogImportReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``hygie catalog import`` tells the operator, and what the import row keeps."""

    edition: str
    sha256: str
    files: tuple[FileReport, ...]
    counts: dict[str, int]
    coverage: CoverageFigures | None
    history_events: int
    unchanged: bool = False


# --- API shapes ---------------------------------------------------------------------------


class PresentationView(msgspec.Struct, frozen=True, kw_only=True):
    cip13: str
    cip7: str
    label: str
    marketed: bool
    marketing_status: str
    reimbursement_rate: int | None
    price_eur: float | None
    price_with_fees_eur: float | None
    shortage: str | None


class GenericGroupView(msgspec.Struct, frozen=True, kw_only=True):
    group_id: int
    label: str
    role: str


class ShortageView(msgspec.Struct, frozen=True, kw_only=True):
    cip13: str | None
    status: str
    since: date | None
    updated: date | None
    link: str


class CatalogProduct(msgspec.Struct, frozen=True, kw_only=True):
    """What other services need of a speciality to reason about it: its active moieties.

    ``substances`` holds (BDPM substance code, name) of each active moiety, once per
    composition link: the moiety (``FT``) when BDPM gives one, else the substance as salt,
    so a combination product counts each of its substances once.
    """

    cis: str
    name: str
    atc: str | None
    atc_source: str | None
    marketed: bool
    substances: tuple[tuple[str, str], ...]


class MedicationView(msgspec.Struct, frozen=True, kw_only=True):
    """A speciality as the counter sees it: status, reimbursement, price, generic group."""

    cis: str
    name: str
    form: str
    routes: list[str]
    marketed: bool
    status: str
    reinforced_monitoring: bool
    shortages: list[ShortageView]
    atc: str | None
    atc_source: str | None
    substances: list[str]
    generic_group: GenericGroupView | None
    reimbursement_rates: list[int]
    presentations: list[PresentationView]


class HistoryEventView(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    cip13: str | None
    old: str | None
    new: str | None
    observed_at: str
    catalog_edition: str


class HistoryView(msgspec.Struct, frozen=True, kw_only=True):
    cis: str
    name: str
    baseline: str | None
    """Edition of the first import: changes before it are not known."""
    events: list[HistoryEventView]


class EditionsView(msgspec.Struct, frozen=True, kw_only=True):
    catalog: str | None
    catalog_imported_at: str | None
    thesaurus: str | None
    coverage: dict[str, float]


# --- ANSM thesaurus -----------------------------------------------------------------------


class Level(StrEnum):
    """Interaction levels of the ANSM thesaurus, most severe first."""

    CONTRAINDICATION = "contre-indication"
    NOT_RECOMMENDED = "association-deconseillee"
    PRECAUTION = "precaution-emploi"
    TAKE_INTO_ACCOUNT = "a-prendre-en-compte"


LEVEL_SEVERITY: dict[Level, int] = {
    Level.CONTRAINDICATION: 4,
    Level.NOT_RECOMMENDED: 3,
    Level.PRECAUTION: 2,
    Level.TAKE_INTO_ACCOUNT: 1,
}


class LevelCondition(msgspec.Struct, frozen=True, kw_only=True):
    """One level of a pair; ``condition`` is set when the thesaurus splits by dose/context."""

    level: Level
    condition: str = ""


class SourceRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where a fact stands in the thesaurus PDF (1-based page, entry and partner as printed)."""

    page: int
    entry: str
    partner: str


class Interaction(msgspec.Struct, frozen=True, kw_only=True):
    """A pair of the thesaurus: two substances or classes (keys), their level(s) and source.

    ``mechanism`` and ``conduct`` are ANSM's wording, shown only when the user asks for the
    source; ``message`` is the appliance's own short sentence.
    """

    a: str
    b: str
    level: Level
    levels: tuple[LevelCondition, ...]
    message: str
    mechanism: str
    conduct: str
    sources: tuple[SourceRef, ...]
    parse_warnings: tuple[str, ...] = ()


class ThesaurusEntity(msgspec.Struct, frozen=True, kw_only=True):
    """A name the thesaurus uses, substance or class, with what it maps to."""

    key: str
    name: str
    kind: Literal["substance", "class"]
    members: tuple[str, ...] = ()
    """For a class: keys of its member substances."""
    atc: tuple[str, ...] = ()
    """ATC codes of single-substance specialities containing it."""
    combination_atc: tuple[str, ...] = ()
    """ATC codes of combinations containing it (a combination carries each substance)."""
    substance_codes: tuple[str, ...] = ()
    mapping: str = ""
    """How the ATC codes were found (``mono``, ``combination``, ``name``), empty if unmapped."""


class ThesaurusData(msgspec.Struct, frozen=True, kw_only=True):
    """The committed, versioned knowledge file (one per thesaurus edition)."""

    format: int
    edition: str
    source: str
    generated_by: str
    catalog_edition: str | None
    entities: tuple[ThesaurusEntity, ...]
    interactions: tuple[Interaction, ...]
    unmapped: tuple[str, ...]
    parse_warnings: tuple[str, ...]
    stats: dict[str, float]


class InteractionView(msgspec.Struct, frozen=True, kw_only=True):
    """An interaction found between two drugs, for the counter and the analysis service."""

    a: str
    b: str
    level: str
    levels: list[dict[str, str]]
    message: str
    via: list[str]
    sources: list[dict[str, str | int]]
    edition: str
    source_text: dict[str, str] | None = None
