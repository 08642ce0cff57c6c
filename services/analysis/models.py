"""Analysis shapes: the parsed patient record, findings and the stored analysis (frozen)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

import msgspec

Kind = Literal["interaction", "stopp", "start", "redundancy", "dose", "adherence"]
Severity = Literal["contraindication", "avoid", "precaution", "consider", "high", "moderate", "low"]


class Drug(msgspec.Struct, frozen=True, kw_only=True):
    """One active drug of the patient (a MedicationStatement), as the engine sees it."""

    label: str
    atc: str | None = None
    cis: str | None = None
    cip13: str | None = None
    name: str | None = None
    dose_mg: float | None = None
    """One administration, in mg."""
    daily_dose_mg: float | None = None
    """Dose per day in mg, when the dose and the timing are both known."""
    start: date | None = None
    atc_source: str | None = None
    """Set when the ATC code did not come with the bundle: e.g. ``catalog`` (looked up by
    CIS in the medication catalog, which records its own provenance)."""


class Condition(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    """ICD-10 code without the dot, upper case (e.g. ``I480``)."""
    ald: bool = False
    onset: date | None = None


class Lab(msgspec.Struct, frozen=True, kw_only=True):
    loinc: str
    value: float
    unit: str = ""
    when: date | None = None


class Dispense(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    atc: str | None = None
    cis: str | None = None
    cip13: str | None = None
    handed_over: date
    days_supply: int


class PatientRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What one FHIR Bundle says about a patient, checked and normalised (no I/O)."""

    as_of: date
    birth_date: date | None = None
    sex: Literal["male", "female"] | None = None
    drugs: tuple[Drug, ...] = ()
    conditions: tuple[Condition, ...] = ()
    labs: tuple[Lab, ...] = ()
    dispenses: tuple[Dispense, ...] = ()
    patient_id: str | None = None
    problems: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Inputs set aside as unusable: (what, reasons), reported under ``not_evaluated``."""


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    kind: Kind
    rule: str
    severity: Severity
    atc: list[str]
    message: str
    recommendation: str
    confidence: float
    evidence: dict[str, Any]
    recommendation_gp: str = ""
    """The same advice worded for the prescriber (GP)."""


class NotEvaluated(msgspec.Struct, frozen=True, kw_only=True):
    rule: str
    missing: list[str]


class BpmEligibility(msgspec.Struct, frozen=True, kw_only=True):
    eligible: bool
    reasons: list[str]


class AnalysisResult(msgspec.Struct, frozen=True, kw_only=True):
    source: str | None
    as_of: date
    knowledge: dict[str, str | None]
    bpm_eligibility: BpmEligibility
    findings: list[Finding]
    not_evaluated: list[NotEvaluated]


class StoredAnalysis(msgspec.Struct, frozen=True, kw_only=True):
    """An analysis as kept in the domain store (patient data: its reads are audited)."""

    id: str
    patient_ref: str | None
    result: AnalysisResult


class AnalysisView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    recorded_at: datetime
    recorded_by: str
    result: AnalysisResult


Decision = Literal["accepted", "edited", "dismissed"]


class FindingDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The pharmacist's decision on one finding of a stored analysis.

    A stored analysis never changes, so the finding's position (``index``) is a stable id
    within it; ``rule`` is kept beside it so a reader can check it names the same finding.
    """

    index: int
    rule: str
    decision: Decision
    text: str = ""
    """The proposal to the prescriber as kept (the pharmacist's wording when edited)."""
    reason: str = ""
    """Why the finding was set aside (dismissed)."""


class AnalysisReview(msgspec.Struct, frozen=True, kw_only=True):
    """The pharmacist's review of one stored analysis (one entity per analysis, each change
    a new version: who decided what, and when, is the table's history)."""

    analysis_id: str
    decisions: tuple[FindingDecision, ...] = ()
    proposals: tuple[str, ...] = ()


class ReviewView(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a review as the API shows it; version 0 (no one and no time) while no
    decision has been recorded on the analysis."""

    analysis_id: str
    version: int
    recorded_at: datetime | None
    recorded_by: str | None
    decisions: list[FindingDecision]
    proposals: list[str]
