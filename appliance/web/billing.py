"""Billing at the counter: bill a done BPM step, sign FSEs with the CPS PIN, send lots,
import a return file, the unpaid and rejected lists and the monthly summary.

Everything goes through the billing API (``/api/v1/billing``, docs/billing.md) with the
user's token, so the scopes (``billing:read`` to see, ``billing:write`` to bill, sign and
send) and the audit of every access to patient data are the API's own. A refusal of the API
(``tariff-unconfirmed``, ``no-nir``, ``no-coverage``, a wrong PIN with the tries left...) is
shown with its French ``detail``; the API stores nothing when it refuses.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any, Literal

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import QueryParameter

from appliance.security import requires
from appliance.web.backend import Api, ApiError
from appliance.web.core import (
    TEMPLATES,
    UI,
    PathUUID,
    current_session,
    form_data,
    redirect,
    render,
)

FSE_STATE_FR = {
    "created": "créée",
    "signed": "signée",
    "sent": "envoyée",
    "acknowledged": "acquittée",
    "rejected": "rejetée",
    "paid": "payée",
}
LOT_STATE_FR = {
    "created": "constitué",
    "sent": "envoyé",
    "acknowledged": "acquitté",
    "rejected": "rejeté",
}
INVOICE_STATUS_FR = {"open": "à encaisser", "paid": "payée", "rejected": "rejetée"}
RETURN_MAX_BYTES = 2_000_000
"""The billing API's limit on a return file (``ReturnInput.text``)."""
NOTICE_KEY = "billing_notice"
"""Session scratch key of the message shown once on the next billing page (after a redirect)."""
FseStateQuery = Annotated[
    Literal["created", "signed", "sent", "acknowledged", "rejected", "paid"] | None,
    QueryParameter(name="state", required=False),
]
MonthQuery = Annotated[
    str | None,
    QueryParameter(required=False, pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$"),
]


def euros(cents: Any) -> str:
    """An amount in cents as the counter writes it: ``1 234,50 €``."""
    if not isinstance(cents, int):
        return ""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole:,}".replace(",", "\u202f") + f",{rest:02d}\u00a0€"


TEMPLATES.filters["euros"] = euros
TEMPLATES.globals["FSE_STATE_FR"] = FSE_STATE_FR
TEMPLATES.globals["LOT_STATE_FR"] = LOT_STATE_FR
TEMPLATES.globals["INVOICE_STATUS_FR"] = INVOICE_STATUS_FR


def _api(request: Request[Any, Any, Any]) -> Api:
    return Api(request, current_session(request).access_token)


def _act_for(editions: Any, step: str, on: str) -> dict[str, Any]:
    """The act of ``step`` in the tariff edition in force on ``on`` (the latest valid then;
    on a tie the site's, loaded last: the billing service's rule), to know whether it is
    billed on its own and whether it is an entretien (which may be done remotely)."""
    best: dict[str, Any] | None = None
    for edition in editions or []:
        valid_from = str(edition.get("valid_from") or "")
        if valid_from <= on and (best is None or valid_from >= str(best.get("valid_from"))):
            best = edition
    acts = (best or {}).get("acts") or []
    return next((a for a in acts if step in (a.get("bpm_steps") or [])), {})


async def cycle_billing(
    request: Request[Any, Any, Any], cycle: dict[str, Any]
) -> dict[str, Any] | None:
    """The billing of a BPM cycle's done steps for the cycle page: each step with its FSE
    and invoice, or nothing yet (the « Facturer » form). ``None`` when the user's role does
    not read billing (the page then says nothing about it)."""
    client = _api(request)
    invoices = await client.optional(f"/api/v1/billing/patients/{cycle['patient_id']}/invoices")
    if invoices is None:
        return None
    done = [s for s in cycle.get("steps") or [] if s.get("state") == "done"]
    kinds = {str(s["kind"]) for s in done}
    mine = [i for i in invoices if i["invoice"]["bpm_step"] in kinds]
    fses = await asyncio.gather(
        *(client.optional(f"/api/v1/billing/fse/{i['invoice']['fse_id']}") for i in mine)
    )
    billed: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for invoice, fse in zip(mine, fses, strict=True):
        if not fse or fse["fse"]["bpm_cycle_id"] != cycle["id"]:
            continue
        step = invoice["invoice"]["bpm_step"]
        if step not in billed or billed[step][1]["fse"]["state"] == "rejected":
            billed[step] = (invoice, fse)  # a rejected FSE gives way to the next billing
    editions = await client.optional("/api/v1/billing/tariff")
    rows = []
    for step in done:
        kind = str(step["kind"])
        invoice, fse = billed.get(kind, (None, None))
        act = _act_for(editions, kind, str(step.get("performed_on") or ""))
        rows.append(
            {
                "step": step,
                "invoice": invoice,
                "fse": fse,
                "billable": act.get("billed", True),
                "interview": bool(act.get("interview")),
                "rebill": fse is not None and fse["fse"]["state"] == "rejected",
            }
        )
    return {"rows": rows, "notice": pop_notice(request)}


@post(
    UI + "/bpm/{cycle_id:uuid}/bill",
    guards=[requires("billing:write", "bpm:read")],
    include_in_schema=False,
)
async def bill_step(request: Request[Any, Any, Any], cycle_id: PathUUID) -> Response[str]:
    """« Facturer »: the FSE (state ``created``) and the invoice of a done step, in one
    transaction of the billing API; a refusal shows its French reason and stores nothing."""
    form = await form_data(request)
    client = _api(request)
    cycle = await client.get(f"/api/v1/bpm/{cycle_id}")
    body: dict[str, Any] = {
        "patient_id": str(cycle["patient_id"]),
        "bpm_cycle_id": str(cycle_id),
        "step": str(form.get("step") or ""),
        "remote": form.get("remote") == "on",
        "exoneration": "ald" if form.get("exoneration") == "ald" else "none",
    }
    try:
        result = await client.post("/api/v1/billing/acts", body)
    except ApiError as exc:
        if exc.status not in (400, 404, 409, 422, 503):
            raise
        return render(
            request,
            "billing_refused.html",
            status=exc.status,
            message=_refusal(exc),
            back=f"{UI}/bpm/{cycle_id}",
            back_label="Retour au bilan",
        )
    fse = result["fse"]["fse"]
    current_session(request).scratch[NOTICE_KEY] = (
        f"FSE n° {fse['number']} créée ({euros(fse['pricing']['total_cents'])}) : "
        "signez-la avec la carte CPS dans Facturation."
    )
    return redirect(f"{UI}/bpm/{cycle_id}", request)


def _refusal(exc: ApiError) -> str:
    """The API's French reason; a malformed request (never sent by these forms unless the
    page was tampered with) gets a plain sentence instead of the schema's English."""
    if exc.status in (400, 422) and exc.problem.get("errors"):
        return "Demande invalide : rechargez la page puis recommencez."
    return exc.detail or "Demande refusée."


def pop_notice(request: Request[Any, Any, Any]) -> str | None:
    """The message left by the previous action (shown once)."""
    notice = current_session(request).scratch.pop(NOTICE_KEY, None)
    return notice if isinstance(notice, str) else None


async def _names(client: Api, ids: set[str]) -> dict[str, str]:
    """Patient names for the lists (each read audited by the patients API); an id the
    user cannot read stays unnamed."""
    wanted = sorted(ids)[:200]
    found = await asyncio.gather(*(client.optional(f"/api/v1/patients/{pid}") for pid in wanted))
    names = {}
    for pid, patient in zip(wanted, found, strict=True):
        if patient:
            ident = patient["identity"]
            family = ident.get("used_family_name") or ident.get("birth_family_name") or ""
            names[pid] = f"{family} {ident.get('given_names') or ''}".strip()
    return names


async def _billing_page(
    request: Request[Any, Any, Any],
    *,
    state: str | None = None,
    month: str | None = None,
    notice: str | None = None,
    error: str | None = None,
    error_fse: str | None = None,
    result: dict[str, Any] | None = None,
    status: int = 200,
) -> Response[str]:
    client = _api(request)
    month = month or date.today().strftime("%Y-%m")
    fses, lots, unpaid, rejected, summary = await asyncio.gather(
        client.get("/api/v1/billing/fse", state=state, limit=200),
        client.get("/api/v1/billing/lots", limit=20),
        client.get("/api/v1/billing/unpaid"),
        client.get("/api/v1/billing/rejected"),
        client.get("/api/v1/billing/summary", month=month),
    )
    ids = {f["fse"]["patient_id"] for f in fses}
    ids |= {i["patient_id"] for i in unpaid} | {i["patient_id"] for i in rejected}
    signed = [f for f in fses if f["fse"]["state"] == "signed"]
    if state not in (None, "signed"):
        signed = await client.get("/api/v1/billing/fse", state="signed", limit=1)
    return render(
        request,
        "billing.html",
        status=status,
        fses=fses,
        lots=lots,
        unpaid=unpaid,
        rejected=rejected,
        summary=summary,
        names=await _names(client, ids),
        state=state or "",
        month=month,
        any_signed=bool(signed),
        notice=notice,
        error=error,
        error_fse=error_fse,
        result=result,
    )


@get(UI + "/billing", guards=[requires("billing:read")], include_in_schema=False)
async def billing_home(
    request: Request[Any, Any, Any], fse_state: FseStateQuery = None, month: MonthQuery = None
) -> Response[str]:
    """FSEs with their state, « Signer », lots, returns, unpaid and rejected, the month."""
    return await _billing_page(request, state=fse_state, month=month, notice=pop_notice(request))


@post(
    UI + "/billing/fse/{fse_id:uuid}/sign",
    guards=[requires("billing:write")],
    include_in_schema=False,
)
async def sign_fse(request: Request[Any, Any, Any], fse_id: PathUUID) -> Response[str]:
    """Sign a created FSE: with the CPS card and its PIN, or, PIN left empty, with the
    signer configured on the appliance. A wrong PIN shows the card's message (tries left)."""
    form = await form_data(request)
    pin = str(form.get("pin") or "").strip()
    if pin and not (pin.isdigit() and 4 <= len(pin) <= 8):
        return await _billing_page(
            request,
            error="Le code PIN de la carte CPS comporte 4 à 8 chiffres.",
            error_fse=str(fse_id),
            status=400,
        )
    try:
        signed = await _api(request).post(
            f"/api/v1/billing/fse/{fse_id}/sign", {"pin": pin} if pin else {}
        )
    except ApiError as exc:
        if exc.status not in (400, 404, 409, 422, 503):
            raise
        return await _billing_page(
            request,
            error=f"Signature refusée : {_refusal(exc)}",
            error_fse=str(fse_id),
            status=exc.status,
        )
    current_session(request).scratch[NOTICE_KEY] = f"FSE n° {signed['fse']['number']} signée."
    return redirect(f"{UI}/billing", request)


@post(UI + "/billing/lots", guards=[requires("billing:write")], include_in_schema=False)
async def send_lot(request: Request[Any, Any, Any]) -> Response[str]:
    """« Constituer un lot »: every signed FSE into one lot, handed to the sync outbox."""
    await form_data(request)
    sent = await _api(request).post("/api/v1/billing/lots")
    current_session(request).scratch[NOTICE_KEY] = str(sent.get("message") or "")
    return redirect(f"{UI}/billing", request)


@post(
    UI + "/billing/returns",
    guards=[requires("billing:write")],
    include_in_schema=False,
    request_max_body_size=RETURN_MAX_BYTES + 64 * 1024,
)
async def import_return(request: Request[Any, Any, Any]) -> Response[str]:
    """Apply an acknowledgement or payment return file (NOEMIE-style, docs/sesam_vitale.md)."""
    form = await form_data(request)
    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        return await _billing_page(
            request, error="Choisissez le fichier de retour à importer.", status=400
        )
    content = await file.read()
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text.strip() or len(content) > RETURN_MAX_BYTES:
        return await _billing_page(
            request,
            error="Fichier de retour refusé : ce n'est pas un fichier texte UTF-8 de 2 Mo au plus.",
            status=400,
        )
    try:
        result = await _api(request).post("/api/v1/billing/returns", {"text": text})
    except ApiError as exc:
        if exc.status not in (400, 409, 422):
            raise
        return await _billing_page(
            request, error=f"Fichier de retour refusé : {_refusal(exc)}", status=exc.status
        )
    return await _billing_page(request, result=result)


BILLING_HANDLERS = [bill_step, billing_home, sign_fse, send_lot, import_return]
