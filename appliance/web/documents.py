"""BPM synthesis for the GP: the local LLM's draft, its validation, the pharmacist's edit, then
the generated document, its PAdES signature and its download.

The draft runs in the worker (``POST /api/v1/llm/generate`` answers 202 with a job); the page
polls the job with htmx every two seconds. Only a draft that passed validation is shown;
the pharmacist may edit it, and the edited text is what the transmission step records. The
document service prints the validated draft (``generation_id``) or, without one, the
analysis engine's own wording: it never prints unvalidated model output.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.params import Parameter

from appliance.security import requires
from appliance.web.backend import Api, ApiError
from appliance.web.core import (
    UI,
    PathUUID,
    current_session,
    error_page,
    form_data,
    redirect,
    render,
)
from appliance.web.pages import api, load_review, review_text, today

DocId = Annotated[str, Parameter(max_length=80, pattern=r"^[A-Za-z0-9_.:-]+$")]
JobId = Annotated[str, Parameter(max_length=80, pattern=r"^[A-Za-z0-9_.:-]+$")]
KIND_FR = {
    "synthesis": "Synthèse pour le médecin",
    "plan_de_prise": "Plan de prise",
    "fiche_conseil": "Fiche conseil",
    "compte_rendu": "Compte rendu d'entretien",
}


async def _cycle_context(client: Api, cycle_id: UUID) -> tuple[dict[str, Any], dict[str, Any]]:
    cycle = await client.get(f"/api/v1/bpm/{cycle_id}")
    patient = await client.get(f"/api/v1/patients/{cycle['patient_id']}")
    return cycle, patient


def _reviewed(request: Request[Any, Any, Any], cycle_id: str) -> dict[str, Any] | None:
    found = current_session(request).scratch.get(f"review:{cycle_id}")
    return found if isinstance(found, dict) else None


@get(UI + "/bpm/{cycle_id:uuid}/synthesis", guards=[requires("bpm:read")], include_in_schema=False)
async def synthesis_page(request: Request[Any, Any, Any], cycle_id: PathUUID) -> Response[str]:
    """The synthesis screen: LLM draft (with its checks), edit, documents, signature."""
    client = api(request)
    cycle, patient = await _cycle_context(client, cycle_id)
    documents = await client.optional("/api/v1/documents", patient_id=cycle["patient_id"])
    scratch = current_session(request).scratch.get(f"synthesis:{cycle_id}") or {}
    return render(
        request,
        "synthesis.html",
        cycle=cycle,
        patient=patient,
        review=_reviewed(request, str(cycle_id)),
        documents=documents,
        documents_available=documents is not None,
        job=scratch.get("job"),
        generation=scratch.get("generation"),
        edited=scratch.get("edited"),
        KIND_FR=KIND_FR,
        today=today(),
    )


def _llm_findings(analysis: dict[str, Any], review: dict[str, Any] | None) -> list[Any]:
    """The findings the pharmacist kept (all of them when nothing was decided yet)."""
    findings = list(analysis.get("findings") or [])
    decisions = (review or {}).get("decisions") or {}
    kept = []
    for index, finding in enumerate(findings):
        decision = decisions.get(index) or decisions.get(str(index))
        if decision and decision.get("decision") == "dismissed":
            continue
        item = {
            key: finding.get(key)
            for key in ("kind", "rule", "severity", "atc", "message", "recommendation")
        }
        item["recommendation_gp"] = (decision or {}).get("text") or finding.get(
            "recommendation_gp", ""
        )
        kept.append(item)
    return kept


@post(
    UI + "/bpm/{cycle_id:uuid}/synthesis/draft",
    guards=[requires("llm:generate", "bpm:read")],
    include_in_schema=False,
)
async def request_draft(request: Request[Any, Any, Any], cycle_id: PathUUID) -> Response[str]:
    """Ask the local LLMs for a draft of the GP synthesis (queued for the worker)."""
    await form_data(request)
    client = api(request)
    cycle, _ = await _cycle_context(client, cycle_id)
    reviewed = _reviewed(request, str(cycle_id))
    findings: list[Any] = []
    if reviewed and reviewed.get("analysis_id"):
        analysis = await client.get(f"/api/v1/analyses/{reviewed['analysis_id']}")
        review = await load_review(client, reviewed["analysis_id"])
        findings = _llm_findings(analysis, review)
    prescriptions = await client.optional(
        f"/api/v1/patients/{cycle['patient_id']}/prescriptions", active_only="true"
    )
    treatment = [
        {"drug": str(line.get("label") or line.get("cis") or "?")[:200]}
        for rx in prescriptions or []
        for line in rx.get("lines") or []
    ][:200]
    try:
        job = await client.post(
            "/api/v1/llm/generate",
            {
                "task": "bpm_synthesis",
                "patient_id": cycle["patient_id"],
                "findings": findings[:200],
                "treatment": treatment,
            },
        )
    except ApiError as exc:
        if exc.status not in (400, 409, 422, 503):
            raise
        return error_page(request, exc.status, f"Brouillon impossible : {exc.detail}")
    current_session(request).scratch[f"synthesis:{cycle_id}"] = {"job": job["id"]}
    return redirect(f"{UI}/bpm/{cycle_id}/synthesis", request)


@get(
    UI + "/bpm/{cycle_id:uuid}/synthesis/job/{job_id:str}",
    guards=[requires("llm:read")],
    include_in_schema=False,
)
async def draft_status(
    request: Request[Any, Any, Any], cycle_id: PathUUID, job_id: JobId
) -> Response[str]:
    """The job's state (htmx polls it); once done, the draft with its validation."""
    job = await api(request).get(f"/api/v1/llm/jobs/{job_id}")
    scratch = current_session(request).scratch.setdefault(f"synthesis:{cycle_id}", {})
    if job.get("status") == "done" and job.get("generation"):
        scratch["generation"] = job["generation"]
    return render(
        request,
        "fragments/draft.html",
        cycle={"id": str(cycle_id)},
        job=job_id,
        job_status=job.get("status"),
        error=job.get("error"),
        generation=scratch.get("generation"),
        edited=scratch.get("edited"),
    )


@post(
    UI + "/bpm/{cycle_id:uuid}/synthesis/text",
    guards=[requires("bpm:write")],
    include_in_schema=False,
)
async def save_text(request: Request[Any, Any, Any], cycle_id: PathUUID) -> Response[str]:
    """Keep the pharmacist's edit of the synthesis text (recorded with the transmission)."""
    form = await form_data(request)
    text = str(form.get("text") or "").strip()[:4000]
    scratch = current_session(request).scratch.setdefault(f"synthesis:{cycle_id}", {})
    scratch["edited"] = text or None
    return redirect(f"{UI}/bpm/{cycle_id}/synthesis", request)


@post(
    UI + "/bpm/{cycle_id:uuid}/documents",
    guards=[requires("documents:write")],
    include_in_schema=False,
)
async def generate(request: Request[Any, Any, Any], cycle_id: PathUUID) -> Response[str]:
    """Generate a document of this cycle (synthesis with the reviewed analysis and the
    validated draft, plan de prise, ...)."""
    form = await form_data(request)
    client = api(request)
    cycle, _ = await _cycle_context(client, cycle_id)
    kind = str(form.get("kind") or "synthesis")
    if kind not in KIND_FR:
        return error_page(request, 400, "Type de document inconnu.")
    body: dict[str, Any] = {
        "kind": kind,
        "patient_id": cycle["patient_id"],
        "format": str(form.get("format") or "pdf"),
        "cycle_id": cycle["id"],
    }
    reviewed = _reviewed(request, str(cycle_id))
    if kind == "synthesis":
        if reviewed and reviewed.get("analysis_id"):
            body["analysis_id"] = reviewed["analysis_id"]
        scratch = current_session(request).scratch.get(f"synthesis:{cycle_id}") or {}
        generation = scratch.get("generation") or {}
        if generation.get("valid") and generation.get("id") and not scratch.get("edited"):
            body["generation_id"] = generation["id"]
    if kind in ("compte_rendu", "fiche_conseil"):
        done = [i for i, s in enumerate(cycle.get("steps") or []) if s.get("state") == "done"]
        if not done:
            return error_page(request, 400, "Aucune étape enregistrée pour ce document.")
        body["step_index"] = done[-1]
    try:
        await client.post("/api/v1/documents", body)
    except ApiError as exc:
        if exc.status not in (400, 404, 409, 422):
            raise
        return error_page(request, exc.status, f"Document non généré : {exc.detail}")
    return redirect(f"{UI}/bpm/{cycle_id}/synthesis", request)


@post(
    UI + "/documents/{document_id:str}/sign",
    guards=[requires("documents:sign")],
    include_in_schema=False,
)
async def sign(request: Request[Any, Any, Any], document_id: DocId) -> Response[str]:
    """PAdES signature of a PDF (the CPS card's PIN when the signer is the card)."""
    form = await form_data(request)
    body: dict[str, Any] = {"reason": "Bilan partagé de médication"}
    pin = str(form.get("pin") or "")
    if pin:
        body["pin"] = pin[:16]
    try:
        await api(request).post(f"/api/v1/documents/{document_id}/signature", body)
    except ApiError as exc:
        if exc.status not in (400, 403, 404, 409):
            raise
        message = {
            403: "Signature refusée (code PIN de la carte CPS incorrect ?).",
            409: f"Signature impossible : {exc.detail}",
        }.get(exc.status, f"Signature impossible : {exc.detail}")
        return error_page(request, exc.status, message)
    back = str(form.get("back") or UI + "/")
    return redirect(back if back.startswith(UI + "/") else UI + "/", request)


@get(
    UI + "/documents/{document_id:str}/download",
    guards=[requires("documents:read")],
    include_in_schema=False,
)
async def download(request: Request[Any, Any, Any], document_id: DocId) -> Response[bytes]:
    """The document's bytes from the API (audited there), as a download."""
    response = await api(request).raw("GET", f"/api/v1/documents/{document_id}/content")
    if response.status_code >= 400:
        raise ApiError(response.status_code, {"detail": "document indisponible"})
    return Response(
        response.content,
        media_type=response.headers.get("content-type", "application/octet-stream"),
        headers={
            "Content-Disposition": response.headers.get("content-disposition", "attachment"),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@post(
    UI + "/bpm/{cycle_id:uuid}/transmission",
    guards=[requires("bpm:write")],
    include_in_schema=False,
)
async def record_transmission(request: Request[Any, Any, Any], cycle_id: PathUUID) -> Response[str]:
    """The transmission step, with the synthesis text as sent (edited or validated)."""
    form = await form_data(request)
    client = api(request)
    cycle, _ = await _cycle_context(client, cycle_id)
    scratch = current_session(request).scratch.get(f"synthesis:{cycle_id}") or {}
    generation = scratch.get("generation") or {}
    draft = (generation.get("draft") or {}).get("texte") if generation.get("valid") else None
    reviewed = _reviewed(request, str(cycle_id))
    text = scratch.get("edited") or draft or (reviewed or {}).get("text") or ""
    notes = f"Synthèse transmise au médecin traitant :\n{text}".strip()
    try:
        await client.post(
            f"/api/v1/bpm/{cycle_id}/steps",
            {
                "expected_version": cycle["version"],
                "kind": "transmission",
                "performed_on": str(form.get("performed_on") or today()),
                "notes": notes[:4000],
            },
        )
    except ApiError as exc:
        if exc.status not in (400, 409, 422):
            raise
        return error_page(request, exc.status, f"Étape refusée : {exc.detail}")
    return redirect(f"{UI}/bpm/{cycle_id}", request)


DOCUMENT_HANDLERS = [
    synthesis_page,
    request_draft,
    draft_status,
    save_text,
    generate,
    sign,
    download,
    record_transmission,
]
__all__ = ["DOCUMENT_HANDLERS", "review_text"]
