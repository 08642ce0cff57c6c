"""Pages of the counter UI: patients, BPM workflow, analysis review, catalogue, admin.

Every handler declares the scopes it needs (the API's own ``requires`` guards) and reads or
writes through the API with the user's token (:mod:`appliance.web.backend`), so the routes
that serve the data audit each patient access. Pages answer whole HTML documents; htmx
requests (``HX-Request``) get the fragment they swap.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any
from uuid import UUID

import anyio
from litestar import Request, Response, get, post
from litestar.params import Parameter

from appliance.security import requires
from appliance.web.backend import Api, ApiError
from appliance.web.billing import cycle_billing
from appliance.web.core import (
    SEVERITY_FR,
    UI,
    PathUUID,
    current_session,
    error_page,
    form_data,
    is_htmx,
    redirect,
    render,
)

Text = Annotated[str | None, Parameter(required=False, max_length=200)]
SEVERITY_ORDER = tuple(SEVERITY_FR)
AUDIT_WINDOW = 5000
VIEW_ONLY = frozenset({"id", "version", "recorded_at", "recorded_by"})
"""Members of an API view that are not part of the document sent back on update."""
CODE_CHARS = frozenset("0123456789")


def api(request: Request[Any, Any, Any]) -> Api:
    return Api(request, current_session(request).access_token)


def today() -> str:
    return date.today().isoformat()


# --- home -------------------------------------------------------------------------------------


@get(UI + "/", guards=[requires("account:self")], include_in_schema=False)
async def home(request: Request[Any, Any, Any]) -> Response[str]:
    """Start page: patient search, shortcuts to the day's work."""
    return render(request, "home.html")


# --- patients ---------------------------------------------------------------------------------


@get(UI + "/patients", guards=[requires("patients:read")], include_in_schema=False)
async def patients(request: Request[Any, Any, Any], q: Text = None) -> Response[str]:
    """Search as you type: the results list is re-rendered by htmx on each keystroke."""
    results, error = await _search(request, q)
    template = "fragments/patient_results.html" if is_htmx(request) else "patients.html"
    return render(request, template, q=q or "", results=results, error=error)


async def _search(request: Request[Any, Any, Any], q: str | None) -> tuple[list[Any], str]:
    text = (q or "").strip()
    if len(text) < 2:
        return [], ""
    params: dict[str, Any] = {"limit": 20}
    compact = text.replace(" ", "")
    if len(compact) in (13, 15) and compact[:13].isdigit():
        params["nir"] = compact
    elif len(text) == 10 and text[2] == "/" and text[5] == "/":
        day, month, year = text.split("/")
        params["birth_date"] = f"{year}-{month}-{day}"
    else:
        params["q"] = text
    try:
        return list(await api(request).get("/api/v1/patients", **params)), ""
    except ApiError as exc:
        if exc.status in (400, 422):
            return [], "Saisissez au moins deux lettres du nom, une date (JJ/MM/AAAA) ou un NIR."
        raise


async def product_names(client: Api, codes: set[str]) -> dict[str, str]:
    """Catalogue names of the CIS codes a record lists without a label (CIS → name)."""
    wanted = sorted(codes)[:100]
    found = await asyncio.gather(*(client.optional(f"/api/v1/medications/{cis}") for cis in wanted))
    return {cis: str(item["name"]) for cis, item in zip(wanted, found, strict=True) if item}


PATIENT_FIELDS = (
    "identity.birth_family_name",
    "identity.used_family_name",
    "identity.given_names",
    "identity.used_given_name",
    "identity.birth_date",
    "identity.sex",
    "identity.nir",
    "identity.birth_place_code",
    "contact.phone",
    "contact.email",
    "contact.address.lines",
    "contact.address.postal_code",
    "contact.address.city",
    "gp.name",
    "gp.rpps",
    "coverage.amo.regime",
    "coverage.amo.caisse",
    "coverage.amo.centre",
    "coverage.css",
)


def _flatten(record: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key in PATIENT_FIELDS:
        node: Any = record
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if key == "contact.address.lines":
            node = " / ".join(node or [])
        if isinstance(node, bool):
            node = "on" if node else ""
        values[key] = "" if node is None else str(node)
    return values


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _record_from_form(form: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The patient document: ``base`` (the stored record) with the form's fields replaced.

    Blocks of optional data (GP, AMO) are left out when all their fields are empty.
    """
    record = {
        k: v for k, v in base.items() if k not in {"id", "version", "recorded_at", "recorded_by"}
    }
    for block in ("identity", "contact", "coverage"):
        record[block] = dict(record.get(block) or {})
    record["contact"]["address"] = dict(record["contact"].get("address") or {})
    amo = dict(record["coverage"].get("amo") or {})
    record["coverage"]["amo"] = amo
    gp = dict(record.get("gp") or {})
    record["gp"] = gp
    for key in PATIENT_FIELDS:
        raw = form.get(key)
        if key == "coverage.css":
            _set(record, key, raw == "on")
            continue
        value = str(raw or "").strip()
        if key == "contact.address.lines":
            _set(record, key, [line.strip() for line in value.split("/") if line.strip()])
            continue
        _set(record, key, value or None)
    if not any(amo.get(k) for k in ("regime", "caisse", "centre")):
        record["coverage"]["amo"] = None
    elif base.get("coverage", {}).get("amo", {}) and "valid_until" in base["coverage"]["amo"]:
        amo["valid_until"] = base["coverage"]["amo"]["valid_until"]
    if not gp.get("name"):
        record["gp"] = None if not gp.get("rpps") else gp
    address = record["contact"]["address"]
    address.setdefault("country", "FR")
    for key in ("postal_code", "city"):
        address[key] = address.get(key) or ""
    contact = record["contact"]
    for key in ("phone", "email"):
        if not contact.get(key):
            contact[key] = None
    cleaned: dict[str, Any] = _drop_nones(record)
    return cleaned


def _drop_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


def _errors_by_field(exc: ApiError) -> dict[str, str]:
    """API validation messages keyed by the form's dotted field names."""
    found: dict[str, str] = {}
    for key, message in exc.field_errors().items():
        clean = key.removeprefix("$.").removeprefix("body.")
        if "`$." in message:  # msgspec: "Expected `str` - at `$.identity.nir`"
            clean = message.split("`$.", 1)[1].split("`", 1)[0]
        if "missing required field `" in message:  # "... field `sex` - at `$.identity`"
            name = message.split("missing required field `", 1)[1].split("`", 1)[0]
            clean = f"{clean}.{name}" if clean else name
        clean = clean.split("[", 1)[0]
        for name in PATIENT_FIELDS:
            if clean == name or clean.startswith(name + "."):
                clean = name
        found.setdefault(clean, message)
    if not found and exc.detail:
        found[""] = exc.detail
    return found


FIELD_MESSAGES_FR = (
    ("future", "La date ne peut pas être dans le futur."),
    ("NIR", "NIR invalide : 13 chiffres et une clé de 2 chiffres."),
    ("key", "La clé ne correspond pas au numéro."),
    ("pattern", "Format invalide."),
    ("length", "Longueur invalide."),
    ("required", "Champ obligatoire."),
    ("missing", "Champ obligatoire."),
)


def french(message: str) -> str:
    """A French message for the counter, with the API's precise English wording kept."""
    for needle, text in FIELD_MESSAGES_FR:
        if needle.lower() in message.lower():
            return f"{text} ({message})"
    return f"Valeur refusée ({message})"


@get(UI + "/patients/new", guards=[requires("patients:write")], include_in_schema=False)
async def patient_new(request: Request[Any, Any, Any], card: Text = None) -> Response[str]:
    """An empty form, or one pre-filled from a Vitale card just read (``card=N``)."""
    values: dict[str, str] = {}
    read = current_session(request).scratch.get("vitale")
    if card is not None and card.isdigit() and isinstance(read, list) and int(card) < len(read):
        form = read[int(card)].get("form")
        if isinstance(form, dict):
            values = _flatten(form)
    return render(
        request, "patient_form.html", values=values, errors={}, patient=None, from_card=bool(values)
    )


@post(UI + "/cards/vitale", guards=[requires("cards:read")], include_in_schema=False)
async def read_vitale(request: Request[Any, Any, Any]) -> Response[str]:
    """Read the Vitale card in the counter's reader: each beneficiary with its record, or a
    form pre-filled from the card (checked by the pharmacist before it is saved)."""
    await form_data(request)
    try:
        card = await api(request).post("/api/v1/cards/read", {})
    except ApiError as exc:
        if exc.status not in (400, 404, 409, 503):
            raise
        return render(request, "fragments/vitale.html", error=exc.detail, beneficiaries=[])
    if card.get("type") != "vitale":
        return render(
            request,
            "fragments/vitale.html",
            error="La carte lue n'est pas une carte Vitale.",
            beneficiaries=[],
        )
    beneficiaries = list(card.get("beneficiaries") or [])
    current_session(request).scratch["vitale"] = beneficiaries
    return render(request, "fragments/vitale.html", error=None, beneficiaries=beneficiaries)


@post(UI + "/patients/new", guards=[requires("patients:write")], include_in_schema=False)
async def patient_create(request: Request[Any, Any, Any]) -> Response[str]:
    form = await form_data(request)
    record = _record_from_form(form, {"identity": {"status": "provisional"}})
    try:
        created = await api(request).post("/api/v1/patients", record)
    except ApiError as exc:
        if exc.status not in (400, 409, 422):
            raise
        errors = {k: french(v) for k, v in _errors_by_field(exc).items()}
        return render(
            request, "patient_form.html", status=400, values=form, errors=errors, patient=None
        )
    return redirect(f"{UI}/patients/{created['id']}", request)


@get(
    UI + "/patients/{patient_id:uuid}", guards=[requires("patients:read")], include_in_schema=False
)
async def patient_page(request: Request[Any, Any, Any], patient_id: PathUUID) -> Response[str]:
    """Identity, coverage, conditions, labs, treatments, dispensings, BPM status, consents."""
    client = api(request)
    pid = str(patient_id)
    patient = await client.get(f"/api/v1/patients/{pid}")
    prescriptions = await client.optional(f"/api/v1/patients/{pid}/prescriptions")
    dispensings = await client.optional(f"/api/v1/patients/{pid}/dispensings")
    cycles = await client.optional("/api/v1/bpm", patient_id=pid)
    assessed = await client.optional(f"/api/v1/patients/{pid}/bpm-eligibility")
    eligibility = assessed.get("eligibility") if isinstance(assessed, dict) else None
    codes = {
        str(item["cis"])
        for item in [
            *(line for rx in prescriptions or [] for line in rx.get("lines") or []),
            *(dispensings or []),
        ]
        if item.get("cis") and not item.get("label")
    }
    return render(
        request,
        "patient.html",
        names=await product_names(client, codes),
        patient=patient,
        prescriptions=prescriptions or [],
        dispensings=dispensings or [],
        cycles=cycles or [],
        eligibility=eligibility,
    )


@get(
    UI + "/patients/{patient_id:uuid}/edit",
    guards=[requires("patients:write")],
    include_in_schema=False,
)
async def patient_edit(request: Request[Any, Any, Any], patient_id: PathUUID) -> Response[str]:
    patient = await api(request).get(f"/api/v1/patients/{patient_id}")
    return render(
        request, "patient_form.html", values=_flatten(patient), errors={}, patient=patient
    )


@post(
    UI + "/patients/{patient_id:uuid}/edit",
    guards=[requires("patients:write")],
    include_in_schema=False,
)
async def patient_update(request: Request[Any, Any, Any], patient_id: PathUUID) -> Response[str]:
    form = await form_data(request)
    client = api(request)
    patient = await client.get(f"/api/v1/patients/{patient_id}")
    record = _record_from_form(form, patient)
    record["expected_version"] = int(form.get("expected_version") or patient["version"])
    try:
        await client.put(f"/api/v1/patients/{patient_id}", record)
    except ApiError as exc:
        if exc.status not in (400, 409, 422):
            raise
        errors = {k: french(v) for k, v in _errors_by_field(exc).items()}
        if exc.status == 409:
            errors[""] = (
                "Le dossier a été modifié par quelqu'un d'autre entre-temps : "
                "rechargez la page pour repartir de la dernière version."
            )
        return render(
            request, "patient_form.html", status=400, values=form, errors=errors, patient=patient
        )
    return redirect(f"{UI}/patients/{patient_id}", request)


# --- BPM --------------------------------------------------------------------------------------


@get(UI + "/bpm", guards=[requires("bpm:read")], include_in_schema=False)
async def bpm_home(request: Request[Any, Any, Any]) -> Response[str]:
    """The BPM-eligible patients (rule of the convention in force, with its reasons)."""
    client = api(request)
    eligible = await client.optional("/api/v1/bpm/eligible", limit=100)
    rows: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    if isinstance(eligible, list):
        people = await asyncio.gather(
            *(client.optional(f"/api/v1/patients/{item['patient_id']}") for item in eligible)
        )
        rows = list(zip(eligible, people, strict=True))
    due = await client.optional("/api/v1/bpm/follow-ups", within_days=FOLLOW_UP_HORIZON_DAYS)
    follow_ups: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    if isinstance(due, list):
        owners = await asyncio.gather(
            *(client.optional(f"/api/v1/patients/{item['patient_id']}") for item in due)
        )
        follow_ups = list(zip(due, owners, strict=True))
    return render(
        request,
        "bpm.html",
        rows=rows,
        unavailable=eligible is None,
        follow_ups=follow_ups,
        horizon=FOLLOW_UP_HORIZON_DAYS,
    )


FOLLOW_UP_HORIZON_DAYS = 7
"""The BPM home lists the planned steps overdue or due within this many days."""


def _consent(patient: dict[str, Any], kind: str) -> dict[str, Any] | None:
    found = [c for c in patient.get("consents") or [] if c.get("kind") == kind]
    return max(found, key=lambda c: c.get("decided_on", "")) if found else None


@get(
    UI + "/patients/{patient_id:uuid}/bpm/enrol",
    guards=[requires("bpm:write")],
    include_in_schema=False,
)
async def bpm_enrol_form(request: Request[Any, Any, Any], patient_id: PathUUID) -> Response[str]:
    client = api(request)
    patient = await client.get(f"/api/v1/patients/{patient_id}")
    assessed = await client.optional(f"/api/v1/patients/{patient_id}/bpm-eligibility")
    eligibility = assessed.get("eligibility") if isinstance(assessed, dict) else None
    return render(
        request,
        "bpm_enrol.html",
        patient=patient,
        eligibility=eligibility,
        consent=_consent(patient, "bpm_adhesion"),
        today=today(),
        errors={},
    )


@post(
    UI + "/patients/{patient_id:uuid}/bpm/enrol",
    guards=[requires("bpm:write", "patients:write")],
    include_in_schema=False,
)
async def bpm_enrol(request: Request[Any, Any, Any], patient_id: PathUUID) -> Response[str]:
    """Record the signed adhesion consent, open the cycle and record the adhesion step."""
    form = await form_data(request)
    client = api(request)
    patient = await client.get(f"/api/v1/patients/{patient_id}")
    on = str(form.get("decided_on") or today())
    if form.get("consent") != "on":
        return render(
            request,
            "bpm_enrol.html",
            status=400,
            patient=patient,
            eligibility=None,
            consent=_consent(patient, "bpm_adhesion"),
            today=on,
            errors={"consent": "Cochez la case : l'adhésion signée du patient est obligatoire."},
        )
    current = _consent(patient, "bpm_adhesion")
    if current is None or current.get("status") != "granted":
        record = {k: v for k, v in patient.items() if k not in VIEW_ONLY}
        consent = {"kind": "bpm_adhesion", "status": "granted", "decided_on": on}
        record["consents"] = [*(patient.get("consents") or []), consent]
        record["expected_version"] = patient["version"]
        await client.put(f"/api/v1/patients/{patient_id}", _drop_nones(record))
    cycle = await client.post("/api/v1/bpm", {"patient_id": str(patient_id), "opened_on": on})
    await client.post(
        f"/api/v1/bpm/{cycle['id']}/steps",
        {"expected_version": cycle["version"], "kind": "adhesion", "performed_on": on},
    )
    return redirect(f"{UI}/bpm/{cycle['id']}", request)


INTERVIEW_QUESTIONS = (
    ("conditions", "Pathologies et problèmes de santé évoqués par le patient"),
    ("other_products", "Automédication, compléments, phytothérapie"),
    ("lifestyle", "Mode de vie (alimentation, activité, tabac, alcool, sommeil)"),
    ("autonomy", "Autonomie et gestion des médicaments (pilulier, aidant)"),
    ("adherence_forget", "Vous arrive-t-il d'oublier de prendre vos médicaments ?"),
    ("adherence_stop", "Vous arrive-t-il d'arrêter un traitement quand vous allez mieux ?"),
    ("adherence_effects", "Ressentez-vous des effets indésirables ?"),
    ("expectations", "Attentes et questions du patient"),
)
"""The interview's headings; the answers are the patient's words, kept as the step notes."""


@get(UI + "/bpm/{cycle_id:uuid}", guards=[requires("bpm:read")], include_in_schema=False)
async def bpm_cycle(request: Request[Any, Any, Any], cycle_id: PathUUID) -> Response[str]:
    """One cycle: its steps (done, next, planned), the form of the next one."""
    client = api(request)
    cycle = await client.get(f"/api/v1/bpm/{cycle_id}")
    patient = await client.get(f"/api/v1/patients/{cycle['patient_id']}")
    opened = date.fromisoformat(cycle["opened_on"])
    try:
        anniversary = opened.replace(year=opened.year + 1)
    except ValueError:  # 29 February
        anniversary = opened.replace(year=opened.year + 1, day=28)
    review = current_session(request).scratch.get(f"review:{cycle_id}")
    return render(
        request,
        "bpm_cycle.html",
        cycle=cycle,
        patient=patient,
        questions=INTERVIEW_QUESTIONS,
        anniversary=anniversary.isoformat(),
        today=today(),
        review=review,
        billing=await cycle_billing(request, cycle),
    )


INTERVIEW_CONDITIONS = 3
"""Rows of « pathologie déclarée » in the interview form (ICD-10 code and label)."""


async def _add_conditions(client: Api, cycle_id: UUID, form: dict[str, Any]) -> str | None:
    """Add the conditions declared at the interview to the patient record (a new version,
    validated by the patients API); a French message when the record refuses them."""
    declared = []
    for index in range(INTERVIEW_CONDITIONS):
        code = str(form.get(f"cond{index}.icd10") or "").strip().upper()
        label = str(form.get(f"cond{index}.label") or "").strip()
        if code:
            declared.append(
                {"icd10": code, "status": "active", **({"label": label} if label else {})}
            )
    if not declared:
        return None
    cycle = await client.get(f"/api/v1/bpm/{cycle_id}")
    patient = await client.get(f"/api/v1/patients/{cycle['patient_id']}")
    record = {k: v for k, v in patient.items() if k not in VIEW_ONLY}
    clinical = dict(record.get("clinical") or {})
    known = {c.get("icd10") for c in clinical.get("conditions") or []}
    clinical["conditions"] = [
        *(clinical.get("conditions") or []),
        *(c for c in declared if c["icd10"] not in known),
    ]
    record["clinical"] = clinical
    record["expected_version"] = patient["version"]
    try:
        await client.put(f"/api/v1/patients/{patient['id']}", _drop_nones(record))
    except ApiError as exc:
        if exc.status not in (400, 409, 422):
            raise
        details = "; ".join(exc.field_errors().values()) or exc.detail
        return f"Pathologie refusée par le dossier (code CIM-10 à vérifier) : {details}"
    return None


@post(UI + "/bpm/{cycle_id:uuid}/steps", guards=[requires("bpm:write")], include_in_schema=False)
async def bpm_step(request: Request[Any, Any, Any], cycle_id: PathUUID) -> Response[str]:
    """Record the next step; the interview's answers become the step's (encrypted) notes."""
    form = await form_data(request)
    client = api(request)
    kind = str(form.get("kind") or "")
    notes = str(form.get("notes") or "").strip()
    if kind == "recueil":
        parts = []
        for key, label in INTERVIEW_QUESTIONS:
            answer = str(form.get(f"q_{key}") or "").strip()
            if answer:
                parts.append(f"{label} : {answer}")
        notes = "\n".join(parts + ([notes] if notes else []))
        added = await _add_conditions(client, cycle_id, form)
        if added is not None:
            return error_page(request, 400, added)
    body: dict[str, Any] = {
        "expected_version": int(form.get("expected_version") or 0),
        "kind": kind,
        "performed_on": str(form.get("performed_on") or today()),
    }
    if notes:
        body["notes"] = notes[:4000]
    if kind == "suivi":
        body["treatments_changed"] = form.get("treatments_changed") == "yes"
    try:
        await client.post(f"/api/v1/bpm/{cycle_id}/steps", body)
    except ApiError as exc:
        if exc.status not in (400, 409, 422):
            raise
        return error_page(request, exc.status, f"Étape refusée : {exc.detail}")
    return redirect(f"{UI}/bpm/{cycle_id}", request)


@post(
    UI + "/bpm/{cycle_id:uuid}/follow-ups", guards=[requires("bpm:write")], include_in_schema=False
)
async def bpm_follow_up(request: Request[Any, Any, Any], cycle_id: PathUUID) -> Response[str]:
    """Plan (or replan) a step for the date the pharmacist chose, or cancel its plan."""
    form = await form_data(request)
    client = api(request)
    kind = str(form.get("kind") or "")
    version = int(form.get("expected_version") or 0)
    try:
        if form.get("action") == "cancel":
            await client.post(
                f"/api/v1/bpm/{cycle_id}/follow-ups/cancel",
                {"expected_version": version, "kind": kind},
            )
        else:
            await client.post(
                f"/api/v1/bpm/{cycle_id}/follow-ups",
                {"expected_version": version, "kind": kind, "due_on": str(form.get("due_on"))},
            )
    except ApiError as exc:
        if exc.status not in (400, 404, 409, 422):
            raise
        slug = str(exc.problem.get("type") or "").rsplit(":", 1)[-1]
        message = FOLLOW_UP_REFUSALS.get(slug, f"demande non valide ({exc.detail})")
        return error_page(request, exc.status, f"Planification refusée : {message}")
    return redirect(f"{UI}/bpm/{cycle_id}", request)


FOLLOW_UP_REFUSALS = {
    "bpm-date": "la date prévue ne peut pas être dans le passé.",
    "bpm-step-done": "cette étape est déjà faite.",
    "bpm-follow-up-kind": "cette étape ne fait pas partie de ce bilan.",
    "bpm-closed": "ce bilan est clos.",
    "not-found": "aucune planification pour cette étape.",
    "version-conflict": "le bilan a été modifié entre-temps ; rechargez la page.",
}
"""French words for the counter on the API's follow-up refusals (keyed by problem slug)."""


# --- analysis ---------------------------------------------------------------------------------


@post(
    UI + "/patients/{patient_id:uuid}/analysis",
    guards=[requires("analysis:run", "patients:read")],
    include_in_schema=False,
)
async def run_analysis(request: Request[Any, Any, Any], patient_id: PathUUID) -> Response[str]:
    """Export the record as FHIR, analyse it, show the findings to review."""
    form = await form_data(request)
    client = api(request)
    # The export marks each prescription line active while its treatment runs, and the
    # engine reads active MedicationRequests as treatments (services/analysis/fhir.py).
    bundle = await client.get(f"/api/v1/patients/{patient_id}/$everything")
    result = await client.post("/api/v1/analyses", bundle)
    cycle = str(form.get("cycle_id") or "")
    query = f"?patient_id={patient_id}" + (f"&cycle_id={cycle}" if cycle else "")
    return redirect(f"{UI}/analyses/{result['id']}{query}", request)


def _grouped(findings: list[dict[str, Any]]) -> list[tuple[str, list[tuple[int, dict[str, Any]]]]]:
    groups: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, finding in enumerate(findings):
        groups.setdefault(str(finding.get("severity")), []).append((index, finding))
    order = {name: i for i, name in enumerate(SEVERITY_ORDER)}
    return sorted(groups.items(), key=lambda item: order.get(item[0], len(order)))


def _review_of(view: Any) -> dict[str, Any]:
    """The analysis service's review (``ReviewView``) as the templates read it: decisions
    by finding position, the pharmacist's own proposals."""
    return {
        "decisions": {int(d["index"]): d for d in view.get("decisions") or []},
        "proposals": list(view.get("proposals") or []),
        "version": view.get("version", 0),
    }


async def load_review(client: Api, analysis_id: str) -> dict[str, Any]:
    """The stored review of an analysis (the analysis service keeps every decision as it is
    made, so a restart of the server or the end of the session loses none)."""
    return _review_of(await client.get(f"/api/v1/analyses/{analysis_id}/review"))


@get(
    UI + "/analyses/{analysis_id:str}",
    guards=[requires("analysis:run")],
    include_in_schema=False,
)
async def analysis_page(
    request: Request[Any, Any, Any],
    analysis_id: Annotated[str, Parameter(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
    patient_id: Annotated[str | None, Parameter(required=False, max_length=64)] = None,
    cycle_id: Annotated[str | None, Parameter(required=False, max_length=64)] = None,
) -> Response[str]:
    """Findings grouped by severity, each with its explanation, sources and decision."""
    client = api(request)
    analysis = await client.get(f"/api/v1/analyses/{analysis_id}")
    findings = list(analysis.get("findings") or [])
    return render(
        request,
        "analysis.html",
        analysis=analysis,
        groups=_grouped(findings),
        review=await load_review(client, analysis_id),
        patient_id=patient_id,
        cycle_id=cycle_id,
    )


@post(
    UI + "/analyses/{analysis_id:str}/findings/{index:int}",
    guards=[requires("analysis:run")],
    include_in_schema=False,
)
async def decide_finding(
    request: Request[Any, Any, Any],
    analysis_id: Annotated[str, Parameter(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
    index: Annotated[int, Parameter(ge=0, le=10_000)],
) -> Response[str]:
    """Accept, edit or dismiss one finding: stored at once by the analysis service (a new
    version of the review), so nothing decided is lost before « Valider l'analyse »."""
    form = await form_data(request)
    client = api(request)
    analysis = await client.get(f"/api/v1/analyses/{analysis_id}")
    findings = list(analysis.get("findings") or [])
    if index >= len(findings):
        return error_page(request, 404, "Cette alerte n'existe pas dans l'analyse.")
    decision = str(form.get("decision") or "")
    if decision not in {"accepted", "edited", "dismissed"}:
        return error_page(request, 400, "Décision inconnue.")
    try:
        view = await client.put(
            f"/api/v1/analyses/{analysis_id}/review/findings/{index}",
            {
                "decision": decision,
                "text": str(form.get("text") or "").strip()[:2000],
                "reason": str(form.get("reason") or "").strip()[:500],
                "rule": findings[index].get("rule"),
            },
        )
    except ApiError as exc:
        if exc.status not in (400, 404, 409, 422):
            raise
        return error_page(request, exc.status, f"Décision refusée : {exc.detail}")
    review = _review_of(view)
    return render(
        request,
        "fragments/finding.html",
        index=index,
        finding=findings[index],
        review=review,
        analysis=analysis,
    )


@post(
    UI + "/analyses/{analysis_id:str}/proposals",
    guards=[requires("analysis:run")],
    include_in_schema=False,
)
async def add_proposal(
    request: Request[Any, Any, Any],
    analysis_id: Annotated[str, Parameter(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
) -> Response[str]:
    """A proposal of the pharmacist's own, stored at once in the analysis review."""
    form = await form_data(request)
    client = api(request)
    text = str(form.get("proposal") or "").strip()[:2000]
    if not text:
        review = await load_review(client, analysis_id)
    else:
        try:
            view = await client.post(
                f"/api/v1/analyses/{analysis_id}/review/proposals", {"text": text}
            )
        except ApiError as exc:
            if exc.status not in (400, 409, 422):
                raise
            return error_page(request, exc.status, f"Proposition refusée : {exc.detail}")
        review = _review_of(view)
    return render(request, "fragments/proposals.html", review=review, analysis={"id": analysis_id})


def review_text(analysis: dict[str, Any], review: dict[str, Any]) -> str:
    """The reviewed analysis in words: what the pharmacist kept, changed, set aside."""
    findings = list(analysis.get("findings") or [])
    as_of = str(analysis.get("as_of") or "")
    day = ".".join(reversed(as_of.split("-"))).replace(".", "/") if as_of else ""
    lines = [f"Analyse {analysis['id']} du {day}"]
    for index, finding in enumerate(findings):
        decision = review["decisions"].get(index) or review["decisions"].get(str(index))
        state = (decision or {}).get("decision", "pending")
        label = {
            "accepted": "Retenue",
            "edited": "Retenue (modifiée)",
            "dismissed": "Écartée",
            "pending": "Non traitée",
        }[state]
        text = (decision or {}).get("text") or finding.get("recommendation_gp") or ""
        line = f"- [{label}] {finding.get('rule')} : {finding.get('message')}"
        if state in ("accepted", "edited") and text:
            line += f" — Proposition : {text}"
        if state == "dismissed" and (decision or {}).get("reason"):
            line += f" — Motif : {(decision or {})['reason']}"
        lines.append(line)
    for proposal in review["proposals"]:
        lines.append(f"- [Proposition du pharmacien] {proposal}")
    return "\n".join(lines)


@post(
    UI + "/analyses/{analysis_id:str}/validate",
    guards=[requires("analysis:run", "bpm:write")],
    include_in_schema=False,
)
async def validate_review(
    request: Request[Any, Any, Any],
    analysis_id: Annotated[str, Parameter(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
) -> Response[str]:
    """Record the reviewed analysis as the cycle's « analyse » step (notes, encrypted)."""
    form = await form_data(request)
    client = api(request)
    analysis = await client.get(f"/api/v1/analyses/{analysis_id}")
    cycle_id = str(form.get("cycle_id") or "")
    if not cycle_id:
        return error_page(request, 400, "Aucun cycle de BPM n'est associé à cette analyse.")
    cycle = await client.get(f"/api/v1/bpm/{UUID(cycle_id)}")
    review = await load_review(client, analysis_id)
    notes = review_text(analysis, review)
    try:
        await client.post(
            f"/api/v1/bpm/{cycle['id']}/steps",
            {
                "expected_version": cycle["version"],
                "kind": "analyse",
                "performed_on": today(),
                "notes": notes[:4000],
            },
        )
    except ApiError as exc:
        if exc.status not in (400, 409, 422):
            raise
        return error_page(request, exc.status, f"Étape refusée : {exc.detail}")
    current_session(request).scratch[f"review:{cycle['id']}"] = {
        "analysis_id": analysis_id,
        "text": notes,
    }
    return redirect(f"{UI}/bpm/{cycle['id']}", request)


# --- catalogue --------------------------------------------------------------------------------


def scanned_code(text: str) -> str | None:
    """A box code from a barcode scanner: GS1 DataMatrix (``01`` + GTIN-14 = ``0`` + CIP13
    ...), a bare GTIN-14, CIP13 or CIP7. ``None`` for a name."""
    raw = text.strip().replace("\x1d", "").replace("]d2", "")
    if raw.startswith("01") and len(raw) >= 16 and raw[2:16].isdigit():
        return raw[3:16] if raw[2] == "0" else raw[2:16]
    if set(raw) <= CODE_CHARS and len(raw) in (7, 13, 14):
        return raw[1:] if len(raw) == 14 and raw[0] == "0" else raw
    return None


@get(UI + "/medications", guards=[requires("medications:read")], include_in_schema=False)
async def medications(request: Request[Any, Any, Any], q: Text = None) -> Response[str]:
    """Search by name, substance or code; a scanned box opens its product page."""
    text = (q or "").strip()
    results: list[Any] = []
    message = ""
    if text:
        code = scanned_code(text)
        if code is not None:
            try:
                found = await api(request).get("/api/v1/medications/scan", code=text)
            except ApiError as exc:
                if exc.status not in (400, 404):
                    raise
                message = f"Aucune boîte ne correspond au code {code} dans le catalogue."
            else:
                return redirect(f"{UI}/medications/{found['cis']}", request)
        else:
            try:
                results = list(await api(request).get("/api/v1/medications", q=text))
            except ApiError as exc:
                if exc.status not in (400, 422):
                    raise
                message = "Recherche invalide."
            if not results and not message:
                message = "Aucun médicament trouvé."
    template = "fragments/medication_results.html" if is_htmx(request) else "medications.html"
    return render(request, template, q=text, results=results, message=message)


@get(UI + "/medications/{cis:str}", guards=[requires("medications:read")], include_in_schema=False)
async def medication_page(
    request: Request[Any, Any, Any],
    cis: Annotated[str, Parameter(pattern=r"^[0-9]{8}$")],
) -> Response[str]:
    """Product page: status, presentations, prices, shortages, changes seen."""
    client = api(request)
    product = await client.get(f"/api/v1/medications/{cis}")
    history = await client.optional(f"/api/v1/medications/{cis}/history")
    return render(request, "medication.html", product=product, history=history)


# --- admin ------------------------------------------------------------------------------------


@get(UI + "/admin", guards=[requires("account:self")], include_in_schema=False)
async def admin(request: Request[Any, Any, Any]) -> Response[str]:
    """System health, knowledge editions, users and roles (each panel by its own scope)."""
    client = api(request)
    health = await client.raw("GET", "/health/ready")
    users = await client.optional("/api/identity/users")
    roles = await client.optional("/api/identity/roles")
    knowledge = await client.optional("/api/v1/medications/knowledge")
    models = await client.optional("/api/v1/llm/models")
    sync = await client.optional("/api/v1/sync/status")
    return render(
        request,
        "admin.html",
        health=health.json()
        if health.headers.get("content-type", "").startswith("application/json")
        else {},
        health_status=health.status_code,
        users=users,
        roles=roles,
        knowledge=knowledge,
        models=models,
        sync=sync,
        role_labels={str(r.get("role")): str(r.get("label")) for r in roles or []},
    )


@get(UI + "/admin/audit", guards=[requires("audit:read")], include_in_schema=False)
async def audit_search(
    request: Request[Any, Any, Any],
    actor: Text = None,
    action: Text = None,
    object_id: Text = None,
) -> Response[str]:
    """The audit trail, newest first, filtered by actor, action or object id."""
    platform = request.app.state.platform

    def newest() -> list[Any]:
        after = max(0, platform.audit.count() - AUDIT_WINDOW)
        return list(platform.audit.entries(after_seq=after, limit=AUDIT_WINDOW))

    entries = []
    for entry in (await anyio.to_thread.run_sync(newest))[::-1]:
        if actor and actor not in entry.actor:
            continue
        if action and action != entry.action:
            continue
        if object_id and object_id not in entry.object_id:
            continue
        entries.append(entry)
        if len(entries) >= 200:
            break
    return render(
        request,
        "audit.html",
        entries=entries,
        actor=actor or "",
        action=action or "",
        object_id=object_id or "",
    )


@get(UI + "/account", guards=[requires("account:self")], include_in_schema=False)
async def account(request: Request[Any, Any, Any]) -> Response[str]:
    """One's own account: the PIN of the quick user switch."""
    me = await api(request).optional("/api/identity/me")
    return render(request, "account.html", me=me, errors={}, done=False)


@post(UI + "/account/pin", guards=[requires("account:self")], include_in_schema=False)
async def account_pin(request: Request[Any, Any, Any]) -> Response[str]:
    """Set the PIN (4 to 8 digits), confirmed by the password."""
    form = await form_data(request)
    client = api(request)
    errors: dict[str, str] = {}
    pin = str(form.get("pin") or "")
    if not pin.isdigit() or not 4 <= len(pin) <= 8:
        errors["pin"] = "Le code PIN comporte 4 à 8 chiffres."
    else:
        try:
            await client.put(
                "/api/identity/me/pin",
                {"current_password": str(form.get("current_password") or ""), "pin": pin},
            )
        except ApiError as exc:
            if exc.status not in (400, 401, 403, 422, 429):
                raise
            errors["current_password"] = "Mot de passe incorrect ou code PIN refusé."  # noqa: S105
    me = await client.optional("/api/identity/me")
    return render(
        request,
        "account.html",
        status=400 if errors else 200,
        me=me,
        errors=errors,
        done=not errors,
    )


PAGE_HANDLERS = [
    account,
    account_pin,
    home,
    patients,
    patient_new,
    read_vitale,
    patient_create,
    patient_page,
    patient_edit,
    patient_update,
    bpm_home,
    bpm_enrol_form,
    bpm_enrol,
    bpm_cycle,
    bpm_step,
    bpm_follow_up,
    run_analysis,
    analysis_page,
    decide_finding,
    add_proposal,
    validate_review,
    medications,
    medication_page,
    admin,
    audit_search,
]
