"""Prescription import: upload (or drop) a scan, review the OCR draft beside the page image,
correct it, pick the patient, validate.

Everything goes through the document import API (``/api/v1/imports``): the OCR runs there,
the page images come from there, a correction is a new version of the draft (``PUT`` with
the version the reviewer saw), and validation creates the prescription. Fields read with a
confidence under :data:`LOW_CONFIDENCE` are highlighted for checking; a field the reviewer
changes is stored with confidence 1 (a person confirmed it).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath

from appliance.security import requires
from appliance.web.backend import ApiError
from appliance.web.core import UI, PathUUID, error_page, form_data, is_htmx, redirect, render
from appliance.web.pages import Text, api, french

LOW_CONFIDENCE = 0.8
FIELDS = ("patient_name", "prescriber_name", "prescriber_rpps", "prescribed_on")
LINE_FIELDS = ("label", "cis", "dose", "unit", "per_day", "duration_value")
OCTETS = "application/octet-stream"
TITLES = frozenset({"mme", "mr", "mlle", "monsieur", "madame"})
NUMBERS = {"dose": float, "per_day": float, "duration_value": int}


@get(UI + "/imports", guards=[requires("prescriptions:import")], include_in_schema=False)
async def imports(request: Request[Any, Any, Any]) -> Response[str]:
    """Drop zone and the drafts waiting for review."""
    drafts = await api(request).optional("/api/v1/imports", status="draft", limit=50)
    return render(request, "imports.html", drafts=drafts or [], import_enabled=True)


@post(
    UI + "/imports",
    guards=[requires("prescriptions:import")],
    include_in_schema=False,
    request_max_body_size=26 * 1024 * 1024,
)
async def upload(request: Request[Any, Any, Any]) -> Response[str]:
    """Send the scan to the OCR; open its draft."""
    form = await form_data(request)
    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        return error_page(request, 400, "Choisissez le fichier de l'ordonnance (image ou PDF).")
    content = await file.read()
    try:
        draft = await api(request).post(
            "/api/v1/imports",
            files={"file": (file.filename, content, file.content_type or OCTETS)},
        )
    except ApiError as exc:
        if exc.status not in (400, 413, 415, 422):
            raise
        return error_page(request, exc.status, f"Fichier refusé : {exc.detail}")
    return redirect(f"{UI}/imports/{draft['id']}", request)


async def _candidates(request: Request[Any, Any, Any], content: dict[str, Any]) -> list[Any]:
    """Patients whose name matches the name read on the scan (a hint, never a choice)."""
    name = str((content.get("patient_name") or {}).get("value") or "")
    words = [w for w in name.replace(".", " ").split() if len(w) > 2 and w.lower() not in TITLES]
    if not words:
        return []
    found = await api(request).optional("/api/v1/patients", q=words[-1], limit=10)
    return list(found or [])


@get(
    UI + "/imports/{draft_id:uuid}",
    guards=[requires("prescriptions:import")],
    include_in_schema=False,
)
async def draft_page(request: Request[Any, Any, Any], draft_id: PathUUID) -> Response[str]:
    draft = await api(request).get(f"/api/v1/imports/{draft_id}")
    return render(
        request,
        "import_draft.html",
        draft=draft,
        content=draft["content"],
        candidates=await _candidates(request, draft["content"]),
        low=LOW_CONFIDENCE,
        errors={},
        import_enabled=True,
    )


@get(
    UI + "/imports/{draft_id:uuid}/pages/{number:int}",
    guards=[requires("prescriptions:import")],
    include_in_schema=False,
)
async def page_image(
    request: Request[Any, Any, Any], draft_id: PathUUID, number: FromPath[int]
) -> Response[bytes]:
    """A page of the scan (PNG, straightened) for the side-by-side view."""
    if not 1 <= number <= 100:
        raise ApiError(404, {"detail": "no such page"})
    response = await api(request).raw("GET", f"/api/v1/imports/{draft_id}/pages/{number}")
    if response.status_code >= 400:
        raise ApiError(response.status_code, {"detail": "page indisponible"})
    return Response(
        response.content,
        media_type="image/png",
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )


def _corrected(content: dict[str, Any], form: dict[str, Any]) -> dict[str, Any]:
    """The draft content with the reviewer's values; a changed field gets confidence 1."""
    result = dict(content)
    for name in FIELDS:
        old = dict(content.get(name) or {"value": None, "confidence": 0.0})
        value = str(form.get(name) or "").strip() or None
        if value != old.get("value"):
            old = {"value": value, "confidence": 1.0}
        result[name] = old
    patient_id = str(form.get("patient_id") or "").strip()
    result["patient_id"] = patient_id or None
    renewals = str(form.get("renewals") or "").strip()
    result["renewals"] = int(renewals) if renewals.isdigit() else None
    lines = []
    for index, line in enumerate(content.get("lines") or []):
        if form.get(f"line{index}.delete") == "on":
            continue
        item = dict(line)
        changed = False
        for name in LINE_FIELDS:
            raw = str(form.get(f"line{index}.{name}") or "").strip()
            entered: Any = raw or None
            if entered is not None and name in NUMBERS:
                try:
                    entered = NUMBERS[name](raw.replace(",", "."))
                except ValueError:
                    entered = raw  # the API answers which field is wrong
            if entered != item.get(name):
                changed = True
            item[name] = entered
        for flag in ("as_needed", "non_substitutable"):
            checked = form.get(f"line{index}.{flag}") == "on"
            changed |= checked != bool(item.get(flag))
            item[flag] = checked
        if changed:
            item["confidence"] = 1.0
        lines.append(item)
    result["lines"] = lines
    return result


@post(
    UI + "/imports/{draft_id:uuid}",
    guards=[requires("prescriptions:import")],
    include_in_schema=False,
)
async def review(request: Request[Any, Any, Any], draft_id: PathUUID) -> Response[str]:
    """Save the corrections (a new version); with « Valider », create the prescription."""
    form = await form_data(request)
    client = api(request)
    draft = await client.get(f"/api/v1/imports/{draft_id}")
    content = _corrected(draft["content"], form)
    errors: dict[str, str] = {}
    try:
        saved = await client.put(
            f"/api/v1/imports/{draft_id}",
            {
                "expected_version": int(form.get("expected_version") or draft["version"]),
                "content": content,
            },
        )
        if form.get("action") == "validate":
            result = await client.post(
                f"/api/v1/imports/{draft_id}/validate", {"expected_version": saved["version"]}
            )
            target = content.get("patient_id")
            done = f"{UI}/patients/{target}" if target else f"{UI}/imports"
            del result
            return redirect(done, request)
        draft = saved
    except ApiError as exc:
        if exc.status not in (400, 409, 422):
            raise
        errors = {
            key.removeprefix("content."): french(msg) for key, msg in exc.field_errors().items()
        }
        if not errors:
            errors[""] = exc.detail
        if exc.status == 409:
            errors[""] = "Le brouillon a changé entre-temps ou est déjà validé : rechargez la page."
    return render(
        request,
        "import_draft.html",
        status=400 if errors else 200,
        draft=draft,
        content=content if errors else draft["content"],
        candidates=await _candidates(request, content),
        low=LOW_CONFIDENCE,
        errors=errors,
        saved=not errors,
        import_enabled=True,
        htmx=is_htmx(request),
    )


@get(
    UI + "/imports/{draft_id:uuid}/patients",
    guards=[requires("prescriptions:import", "patients:read")],
    include_in_schema=False,
)
async def patient_options(
    request: Request[Any, Any, Any], draft_id: PathUUID, patient_q: Text = None
) -> Response[str]:
    """The patient picker's options for a name typed by the reviewer (htmx)."""
    text = (patient_q or "").strip()
    found = (
        await api(request).optional("/api/v1/patients", q=text, limit=10) if len(text) > 1 else []
    )
    return render(request, "fragments/patient_options.html", candidates=found or [], selected=None)


IMPORT_HANDLERS = [imports, upload, draft_page, page_image, review, patient_options]
