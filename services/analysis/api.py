"""HTTP API: ``POST /api/v1/analyses`` (stored, audited), its read, and CDS Hooks.

The CDS Hooks service (``medication-prescribe`` / ``order-select``) builds the same
findings from the request's draft orders and prefetched resources and answers cards.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from appliance.audit import AuditLog
from appliance.audit.models import validate_event
from appliance.dependencies import RequestContext
from appliance.fieldcrypto import FieldCryptoError
from appliance.keys import SecretError
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import requires
from appliance.store import Store
from services.analysis import store as repository
from services.analysis.fhir import BundleError, parse, request_as_statement
from services.analysis.logic import ReviewError, analyze
from services.analysis.models import AnalysisResult, Decision, Finding, ReviewView
from services.medications import (
    current_thesaurus,
    interactions_for_specialities,
    knowledge_editions,
    products,
)
from services.patients import patient_crypto

OBJECT_TYPE = "analysis"
REVIEW_OBJECT_TYPE = "analysis_review"
CRYPTO_STATE_KEY = "analysis_patient_crypto"
SCOPE = "analysis:run"
IdParam = Annotated[str, Parameter(pattern=r"^an-[0-9a-f]{16}$(?!\n)", max_length=19)]
CDS_SERVICE_ID = "hygie-medication-review"


class DecisionInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The pharmacist's decision on one finding."""

    decision: Decision
    text: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    """The proposal to the prescriber (required when ``edited``; the engine's wording is
    kept for ``accepted`` when empty)."""
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""
    """Why a finding is dismissed."""
    rule: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    """The finding's rule as the page showed it: refused (409) if it names another."""


class ProposalInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


FindingIndex = Annotated[int, Parameter(ge=0, le=10_000)]


class AnalysisResponse(AnalysisResult, frozen=True, kw_only=True):
    """The analysis output object, plus where it is stored."""

    id: str
    recorded_at: datetime
    recorded_by: str


def catalog_atc(store: Store) -> Callable[[list[str]], dict[str, tuple[str, str | None]]]:
    """CIS → (ATC code, its provenance) from the medication catalog of ``store``."""

    def lookup(cis_list: list[str]) -> dict[str, tuple[str, str | None]]:
        return {
            cis: (product.atc, product.atc_source)
            for cis, product in products(store, cis_list).items()
            if product.atc
        }

    return lookup


def _run(store: Store, bundle: dict[str, Any], source: str | None) -> AnalysisResult:
    try:
        record = parse(bundle, today=datetime.now(UTC).date())
    except BundleError as exc:
        raise Problem(400, "invalid-bundle", str(exc)) from exc
    return analyze(
        record,
        current_thesaurus(store),
        source=source,
        knowledge=knowledge_editions(store),
        specialities=lambda cis: interactions_for_specialities(store, cis),
        atc_for_cis=catalog_atc(store),
    )


class AnalysisController(Controller):
    path = "/api/v1/analyses"
    tags = ["analysis"]

    @post("/", guards=[requires(SCOPE)], sync_to_thread=True)
    def create_analysis(
        self,
        data: JSONBody[dict[str, Any]],
        state: State,
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> AnalysisResponse:
        """Analyse a FHIR R4 Bundle (type collection); the result is stored and audited."""
        result = _run(store, data, None)
        patient_ref = _patient_ref(data)
        pseudonym = _pseudonym(state, platform, patient_ref) if patient_ref else None
        validate_event(ctx.audit_event("create", OBJECT_TYPE, "an-0", purpose="care"))
        saved, _seq = repository.save(
            store, result, patient_ref=patient_ref, pseudonym=pseudonym, actor=ctx.actor
        )
        audit.record(ctx.audit_event("create", OBJECT_TYPE, saved.entity.id, purpose="care"))
        return _response(saved.entity.id, saved.recorded_at, saved.recorded_by, result)

    @get("/{analysis_id:str}", guards=[requires(SCOPE)], sync_to_thread=True)
    def get_analysis(
        self,
        analysis_id: IdParam,
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> AnalysisResponse:
        """A stored analysis (the read is audited)."""
        item = repository.get(store, analysis_id)
        if item is None:
            audit.record(
                ctx.audit_event(
                    "read", OBJECT_TYPE, analysis_id, purpose="care", outcome="not_found"
                )
            )
            raise Problem(404, "not-found", f"no analysis '{analysis_id}'")
        audit.record(ctx.audit_event("read", OBJECT_TYPE, analysis_id, purpose="care"))
        return _response(item.entity.id, item.recorded_at, item.recorded_by, item.entity.result)

    @get("/{analysis_id:str}/review", guards=[requires(SCOPE)], sync_to_thread=True)
    def get_review(
        self,
        analysis_id: IdParam,
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> ReviewView:
        """The pharmacist's review of a stored analysis, latest version (version 0 while
        nothing is decided; the read is audited)."""
        _existing(store, audit, ctx, analysis_id, "read")
        audit.record(ctx.audit_event("read", REVIEW_OBJECT_TYPE, analysis_id, purpose="care"))
        return repository.review_view(analysis_id, repository.get_review(store, analysis_id))

    @get("/{analysis_id:str}/review/history", guards=[requires(SCOPE)], sync_to_thread=True)
    def get_review_history(
        self,
        analysis_id: IdParam,
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> list[ReviewView]:
        """Every version of the review, oldest first: who decided what, and when."""
        _existing(store, audit, ctx, analysis_id, "read")
        audit.record(ctx.audit_event("read", REVIEW_OBJECT_TYPE, analysis_id, purpose="care"))
        return [
            repository.review_view(analysis_id, item)
            for item in repository.review_history(store, analysis_id)
        ]

    @put(
        "/{analysis_id:str}/review/findings/{index:int}",
        guards=[requires(SCOPE)],
        sync_to_thread=True,
    )
    def decide_finding(
        self,
        analysis_id: IdParam,
        index: FindingIndex,
        data: JSONBody[DecisionInput],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> ReviewView:
        """Accept, edit or dismiss one finding (by its position in the stored analysis);
        a later decision on the same finding replaces it in a new version."""
        _existing(store, audit, ctx, analysis_id, "update")
        try:
            saved = repository.review_finding(
                store,
                analysis_id,
                index,
                data.decision,
                actor=ctx.actor,
                text=data.text,
                reason=data.reason,
                rule=data.rule,
            )
        except ReviewError as exc:
            audit.record(
                ctx.audit_event(
                    "update", REVIEW_OBJECT_TYPE, analysis_id, purpose="care", outcome="refused"
                )
            )
            raise Problem(exc.status, exc.code, exc.detail) from exc
        audit.record(ctx.audit_event("update", REVIEW_OBJECT_TYPE, analysis_id, purpose="care"))
        return repository.review_view(analysis_id, saved)

    @post("/{analysis_id:str}/review/proposals", guards=[requires(SCOPE)], sync_to_thread=True)
    def add_proposal(
        self,
        analysis_id: IdParam,
        data: JSONBody[ProposalInput],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> ReviewView:
        """Add a proposal of the pharmacist's own to the review."""
        _existing(store, audit, ctx, analysis_id, "update")
        try:
            saved = repository.add_proposal(store, analysis_id, data.text, actor=ctx.actor)
        except ReviewError as exc:
            audit.record(
                ctx.audit_event(
                    "update", REVIEW_OBJECT_TYPE, analysis_id, purpose="care", outcome="refused"
                )
            )
            raise Problem(exc.status, exc.code, exc.detail) from exc
        audit.record(ctx.audit_event("update", REVIEW_OBJECT_TYPE, analysis_id, purpose="care"))
        return repository.review_view(analysis_id, saved)


def _existing(
    store: Store, audit: AuditLog, ctx: RequestContext, analysis_id: str, action: str
) -> None:
    """A 404 (audited) unless the analysis is stored."""
    if repository.get(store, analysis_id) is None:
        audit.record(
            ctx.audit_event(
                action, REVIEW_OBJECT_TYPE, analysis_id, purpose="care", outcome="not_found"
            )
        )
        raise Problem(404, "not-found", f"no analysis '{analysis_id}'")


def _pseudonym(state: State, platform: Platform, patient_ref: str) -> str:
    """The patients service's pseudonym of this patient id (its field keys, read once)."""
    crypto = state.get(CRYPTO_STATE_KEY)
    if crypto is None:
        try:
            crypto = patient_crypto(platform.settings)
        except (SecretError, FieldCryptoError) as exc:
            raise Problem(
                503,
                "pseudonymisation-unavailable",
                "la clé de pseudonymisation des patients est indisponible : l'analyse n'a pas "
                "été enregistrée",
            ) from exc
        state[CRYPTO_STATE_KEY] = crypto
    return str(crypto.pseudonyms.pseudonym(patient_ref))


def _patient_ref(bundle: dict[str, Any]) -> str | None:
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            ref = resource.get("id")
            return ref[:64] if isinstance(ref, str) else None
    return None


def _response(
    analysis_id: str, recorded_at: datetime, recorded_by: str, result: AnalysisResult
) -> AnalysisResponse:
    return AnalysisResponse(
        **msgspec.structs.asdict(result),
        id=analysis_id,
        recorded_at=recorded_at,
        recorded_by=recorded_by,
    )


# ------------------------------------------------------------------ CDS Hooks 1.0
class CdsService(msgspec.Struct, frozen=True, kw_only=True):
    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str]


class CdsDiscovery(msgspec.Struct, frozen=True, kw_only=True):
    services: list[CdsService]


class CdsCard(msgspec.Struct, frozen=True, kw_only=True):
    uuid: str
    summary: str
    detail: str
    indicator: str
    source: dict[str, str]


class CdsResponse(msgspec.Struct, frozen=True, kw_only=True):
    cards: list[CdsCard]


PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "medications": "MedicationStatement?patient={{context.patientId}}&status=active",
    "conditions": "Condition?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
}
INDICATOR = {
    "contraindication": "critical",
    "avoid": "critical",
    "high": "warning",
    "precaution": "warning",
    "moderate": "info",
    "consider": "info",
    "low": "info",
}


def cds_bundle(request: dict[str, Any]) -> dict[str, Any]:
    """A collection Bundle from a CDS Hooks request: prefetch resources plus draft orders."""
    entries: list[dict[str, Any]] = []
    prefetch = request.get("prefetch") or {}
    if not isinstance(prefetch, dict):
        raise BundleError("prefetch must be an object")
    context = request.get("context") or {}
    if not isinstance(context, dict):
        raise BundleError("context must be an object")
    for value in (*prefetch.values(), context.get("draftOrders")):
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            entries.extend(e for e in value.get("entry") or [] if isinstance(e, dict))
        else:
            entries.append({"resource": value})
    converted: list[dict[str, Any]] = []
    for entry in entries:
        resource = entry.get("resource")
        if isinstance(resource, dict) and resource.get("resourceType") == "MedicationRequest":
            # Orders being written count as treatments; no validity date applies to a draft.
            resource = request_as_statement(resource, statuses=("draft", "active"))
            if resource is None:
                continue
        converted.append({"resource": resource})
    return {"resourceType": "Bundle", "type": "collection", "entry": converted}


def cards_for(findings: list[Finding]) -> list[CdsCard]:
    cards: list[CdsCard] = []
    for index, finding in enumerate(findings):
        summary = f"{finding.rule} — {finding.message}"
        cards.append(
            CdsCard(
                uuid=f"hygie-{index}",
                summary=summary[:137] + "..." if len(summary) > 140 else summary,
                detail=f"{finding.message}\n\n{finding.recommendation_gp or finding.recommendation}"
                f"\n\nConfiance : {finding.confidence:.2f}",
                indicator=INDICATOR[finding.severity],
                source={"label": f"Hygie — {finding.rule}"},
            )
        )
    return cards


class CdsHooksController(Controller):
    path = "/cds-services"
    tags = ["cds-hooks"]

    @get("/", guards=[requires(SCOPE)], sync_to_thread=False)
    def discovery(self) -> CdsDiscovery:
        """CDS Hooks discovery: one service, for medication-prescribe and order-select."""
        return CdsDiscovery(
            services=[
                CdsService(
                    hook=hook,
                    id=service_id,
                    title="Hygie : analyse pharmaceutique",
                    description="Interactions ANSM, STOPP/START v3, redondances, adaptation "
                    "rénale et charge anticholinergique des médicaments prescrits.",
                    prefetch=PREFETCH,
                )
                for hook, service_id in (
                    ("medication-prescribe", CDS_SERVICE_ID),
                    ("order-select", f"{CDS_SERVICE_ID}-order-select"),
                )
            ]
        )

    @post("/{service_id:str}", guards=[requires(SCOPE)], sync_to_thread=True, status_code=200)
    def call_service(
        self,
        service_id: Annotated[str, Parameter(max_length=64)],
        data: JSONBody[dict[str, Any]],
        store: NamedDependency[Store],
    ) -> CdsResponse:
        """Cards built from the analysis of the draft orders with the prefetched record."""
        if service_id not in (CDS_SERVICE_ID, f"{CDS_SERVICE_ID}-order-select"):
            raise Problem(404, "not-found", f"no CDS service '{service_id}'")
        try:
            bundle = cds_bundle(data)
        except BundleError as exc:
            raise Problem(400, "invalid-cds-request", str(exc)) from exc
        result = _run(store, bundle, None)
        return CdsResponse(cards=cards_for(result.findings))
