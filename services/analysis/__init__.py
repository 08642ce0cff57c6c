"""Clinical analysis: interactions, STOPP/START v3, redundancy, renal dosing, anticholinergic
burden, adherence and BPM eligibility, from a FHIR R4 Bundle. See docs/analysis.md.

Public functions for other services: :func:`find_redundancies` (pure, a list of
:class:`Drug` in, findings out), :func:`analyze_bundle` (a Bundle in, the full answer out)
and :func:`parse_bundle`; the pharmacist's review of a stored analysis (issue 9):
:func:`review_finding`, :func:`add_proposal`, :func:`analysis_review`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from appliance.plugin import ServicePlugin
from appliance.store import Store
from services.analysis.api import AnalysisController, CdsHooksController, catalog_atc
from services.analysis.cli import analyze_command
from services.analysis.fhir import BundleError, parse
from services.analysis.logic import ReviewError, analyze, find_redundancies
from services.analysis.models import (
    AnalysisResult,
    Drug,
    Finding,
    FindingDecision,
    PatientRecord,
    ReviewView,
)
from services.analysis.store import MIGRATIONS, add_proposal, review_finding
from services.medications import (
    current_thesaurus,
    interactions_for_specialities,
    knowledge_editions,
)


def parse_bundle(raw: bytes | str | dict[str, Any], *, today: date | None = None) -> PatientRecord:
    """A FHIR R4 Bundle read into a checked record (``BundleError`` when unreadable)."""
    return parse(raw, today=today or datetime.now(UTC).date())


def analyze_bundle(
    raw: bytes | str | dict[str, Any], store: Store | None = None, *, source: str | None = None
) -> AnalysisResult:
    """The whole analysis of one Bundle, with the knowledge in force on ``store``."""
    record = parse_bundle(raw)
    knowledge: dict[str, str | None] = (
        knowledge_editions(store)
        if store is not None
        else {"thesaurus": f"ansm-{current_thesaurus(None).edition}", "catalog": None}
    )
    specialities = (
        (lambda cis: interactions_for_specialities(store, cis)) if store is not None else None
    )
    return analyze(
        record,
        current_thesaurus(store),
        source=source,
        knowledge=knowledge,
        specialities=specialities,
        atc_for_cis=catalog_atc(store) if store is not None else None,
    )


def load_analysis(store: Store, analysis_id: str) -> tuple[str | None, AnalysisResult] | None:
    """A stored analysis: (patient reference, result), ``None`` when unknown (not audited:
    the caller audits its access)."""
    from services.analysis import store as _repository

    item = _repository.get(store, analysis_id)
    return None if item is None else (item.entity.patient_ref, item.entity.result)


def stored_analyses(
    store: Store, *, limit: int = 10_000
) -> list[tuple[str, str | None, datetime, AnalysisResult]]:
    """Stored analyses (id, patient reference, recorded at, result), for exports (not
    audited: the caller audits)."""
    from services.analysis import store as _repository

    return [
        (i.entity.id, i.entity.patient_ref, i.recorded_at, i.entity.result)
        for i in _repository.TABLE.current(store.db, limit=limit)
    ]


def analysis_review(store: Store, analysis_id: str) -> ReviewView | None:
    """The pharmacist's review of a stored analysis (version 0 while nothing is decided),
    ``None`` when the analysis is unknown (not audited: the caller audits its access)."""
    from services.analysis import store as _repository

    if _repository.get(store, analysis_id) is None:
        return None
    return _repository.review_view(analysis_id, _repository.get_review(store, analysis_id))


PLUGIN = ServicePlugin(
    name="analysis",
    controllers=(AnalysisController, CdsHooksController),
    migrations=MIGRATIONS,
    cli=analyze_command,
)

__all__ = [
    "PLUGIN",
    "AnalysisResult",
    "BundleError",
    "Drug",
    "Finding",
    "FindingDecision",
    "ReviewError",
    "ReviewView",
    "add_proposal",
    "analysis_review",
    "analyze_bundle",
    "find_redundancies",
    "load_analysis",
    "parse_bundle",
    "review_finding",
    "stored_analyses",
]
