"""Generate, store, sign, verify and export documents: the I/O around ``logic.py``.

Inputs come only from the other services' public functions (patients, prescriptions, FHIR
export + analysis, LLM generations). Each public function audits what it reads and writes
with the caller's :class:`RequestContext` (the API, the CLI and the web UI share them), so
no caller can forget: object ids are ``<document id>:<sha256>``, never a name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from asn1crypto.x509 import Certificate

from appliance.config import Settings
from appliance.dependencies import RequestContext
from appliance.keys import SecretError, read_secret
from appliance.outbox import enqueue
from appliance.platform import Platform
from appliance.store import Store
from services.analysis import BundleError, analyze_bundle, load_analysis, stored_analyses
from services.documents import logic, render, signing
from services.documents import store as repository
from services.documents.models import (
    MEDIA_TYPES,
    DocumentFormat,
    DocumentKind,
    DocumentModel,
    DocumentView,
    ExportKind,
    FindingItem,
    PatientInfo,
    Pharmacy,
    StepInfo,
    StoredDocument,
    TreatmentRow,
    VerificationView,
)
from services.fhir import everything
from services.llm.logic import stored_generation
from services.patients import (
    PatientCrypto,
    bpm_cycle,
    bpm_cycles,
    load_patient,
    patient_crypto,
)
from services.patients.bpm import next_step
from services.prescriptions import active_medications, prescriptions_of

OBJECT_TYPE = "document"
PURPOSE = "care"
PASSPHRASE_SECRET = "documents-signing-passphrase"  # noqa: S105 - the secret's name
MAX_LOGO_BYTES = 2 * 1024 * 1024
_ID = re.compile(r"^doc-[0-9a-f]{20}$")


class DocumentError(Exception):
    """Bad input or state; ``status`` and ``slug`` become the problem details' answer."""

    def __init__(self, status: int, slug: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.slug = slug


def _audit(
    platform: Platform,
    ctx: RequestContext,
    action: str,
    object_type: str,
    object_id: str,
    outcome: str = "success",
) -> None:
    platform.audit.record(
        ctx.audit_event(action, object_type, object_id, purpose=PURPOSE, outcome=outcome)
    )


def local_today(settings: Settings) -> date:
    return datetime.now(ZoneInfo(settings.timezone)).date()


# --------------------------------------------------------------------------- inputs


def pharmacy_of(settings: Settings) -> Pharmacy:
    """The pharmacy's identity from configuration (the logo read and size-checked)."""
    logo: bytes | None = None
    logo_type: Literal["png", "jpeg"] | None = None
    if settings.pharmacy_logo is not None:
        path = settings.pharmacy_logo
        try:
            if path.stat().st_size > MAX_LOGO_BYTES:
                raise DocumentError(
                    409, "logo-too-large", f"le logo {path} dépasse {MAX_LOGO_BYTES} octets"
                )
            logo = path.read_bytes()
        except OSError as exc:
            raise DocumentError(
                409, "logo-unreadable", f"logo de la pharmacie illisible : {path} ({exc})"
            ) from exc
        logo_type = "png" if logo.startswith(b"\x89PNG") else "jpeg"
    lines = tuple(
        line.strip()
        for line in settings.pharmacy_address.replace("|", "\n").splitlines()
        if line.strip()
    )
    return Pharmacy(
        name=settings.pharmacy_name,
        address_lines=lines,
        finess=settings.pharmacy_finess,
        phone=settings.pharmacy_phone,
        logo=logo,
        logo_type=logo_type,
    )


def _crypto(settings: Settings) -> PatientCrypto:
    try:
        return patient_crypto(settings)
    except SecretError as exc:
        raise DocumentError(503, "field-key-unavailable", str(exc)) from exc


def _patient(store: Store, crypto: PatientCrypto, patient_id: str) -> PatientInfo:
    loaded = load_patient(store, crypto, patient_id)
    if loaded is None:
        raise DocumentError(404, "not-found", f"patient inconnu : {patient_id}")
    identity = loaded[0].identity
    gp = loaded[0].gp
    return PatientInfo(
        family_name=identity.used_family_name or identity.birth_family_name,
        given_names=identity.used_given_name or identity.given_names,
        birth_date=identity.birth_date,
        sex=identity.sex,
        gp_name=gp.name if gp else None,
        gp_rpps=gp.rpps if gp else None,
    )


def treatments_of(store: Store, patient_id: str, as_of: date) -> list[TreatmentRow]:
    """The patient's active prescription lines with their structured posology."""
    prescriptions = dict(prescriptions_of(store, patient_id))
    rows: list[TreatmentRow] = []
    for active in active_medications(store, patient_id, as_of):
        prescription = prescriptions.get(active.prescription_id)
        if prescription is None or active.line >= len(prescription.lines):
            continue
        line = prescription.lines[active.line]
        posology = line.posology
        duration = (
            logic.duration_text(posology.duration.value, posology.duration.unit)
            if posology.duration
            else None
        )
        rows.append(
            logic.treatment_row(
                product=active.label,
                dci=" + ".join(name for _, name in active.substances),
                dose=posology.dose,
                unit=posology.unit,
                times_per_day=posology.times_per_day,
                times_of_day=posology.times_of_day,
                as_needed=posology.as_needed,
                duration=duration,
                original_text=line.original_text,
                since=active.start,
            )
        )
    return rows


def findings_of(
    store: Store, crypto: PatientCrypto, patient_id: str, analysis_id: str | None, today: date
) -> tuple[list[FindingItem], list[tuple[str, list[str]]]]:
    """Findings and rules left unevaluated: from a stored analysis of this patient, or from
    analysing the patient's record now (FHIR export → analysis engine)."""
    if analysis_id is not None:
        loaded = load_analysis(store, analysis_id)
        if loaded is None:
            raise DocumentError(404, "not-found", f"analyse inconnue : {analysis_id}")
        patient_ref, result = loaded
        if patient_ref is not None and patient_ref != patient_id:
            raise DocumentError(
                400, "analysis-of-another-patient", "cette analyse ne concerne pas ce patient"
            )
    else:
        bundle = everything(store, crypto, patient_id, today=today)
        if bundle is None:
            raise DocumentError(404, "not-found", f"patient inconnu : {patient_id}")
        try:
            result = analyze_bundle(bundle, store)
        except BundleError as exc:
            raise DocumentError(
                422,
                "record-not-analysable",
                f"le dossier du patient ne peut pas être analysé : {exc}",
            ) from exc
    items = [
        logic.finding_item(
            f.kind,
            f.rule,
            f.severity,
            f.message,
            f.recommendation,
            f.recommendation_gp,
            f.evidence,
            result.knowledge,
        )
        for f in result.findings
    ]
    return items, [(n.rule, list(n.missing)) for n in result.not_evaluated]


def _synthesis_text(
    store: Store,
    patient_id: str,
    generation_id: str | None,
    findings: Sequence[FindingItem],
    written: str | None = None,
) -> tuple[str, str]:
    """(text, source): the pharmacist's own words, a validated LLM draft of this patient,
    else the engine's words."""
    if written is not None:
        if generation_id is not None:
            raise DocumentError(
                400, "synthesis-source", "donner synthesis_text ou generation_id, pas les deux"
            )
        return written.strip(), "pharmacist"
    if generation_id is None:
        return logic.engine_synthesis(findings), "engine"
    record = stored_generation(store, generation_id)
    if record is None:
        raise DocumentError(404, "not-found", f"brouillon inconnu : {generation_id}")
    if record.task != "bpm_synthesis" or record.patient_id != patient_id:
        raise DocumentError(
            400, "generation-mismatch", "ce brouillon n'est pas une synthèse BPM de ce patient"
        )
    if not record.valid or record.draft is None:
        raise DocumentError(
            409, "generation-invalid", "ce brouillon n'a pas passé la validation : rien à imprimer"
        )
    return record.draft.texte, generation_id


def _step(
    store: Store,
    crypto: PatientCrypto,
    patient_id: str,
    cycle_id: str | None,
    *,
    kind: DocumentKind,
    step_index: int | None,
) -> StepInfo:
    if cycle_id is None:
        raise DocumentError(400, "cycle-required", f"« {kind} » demande cycle_id (le cycle BPM)")
    cycle = bpm_cycle(store, crypto, cycle_id)
    if cycle is None or cycle.patient_id != patient_id:
        raise DocumentError(404, "not-found", f"cycle BPM inconnu pour ce patient : {cycle_id}")
    if kind == "fiche_conseil":
        steps = [s for s in cycle.steps if s.kind == "conseil"]
        if not steps:
            raise DocumentError(
                409, "step-not-done", "l'entretien conseil de ce cycle n'est pas encore enregistré"
            )
        step = steps[-1]
    else:
        if not cycle.steps:
            raise DocumentError(
                409, "step-not-done", "aucune étape de ce cycle n'est encore enregistrée"
            )
        index = len(cycle.steps) - 1 if step_index is None else step_index
        if index >= len(cycle.steps):
            raise DocumentError(
                400,
                "step-index",
                f"step_index {index} : le cycle n'a que {len(cycle.steps)} étape(s) enregistrée(s)",
            )
        step = cycle.steps[index]
    return StepInfo(
        kind=step.kind,
        performed_on=step.performed_on,
        pharmacist=step.pharmacist,
        notes=step.notes,
        treatments_changed=step.treatments_changed,
        cycle_year=cycle.year,
    )


def build_model(
    platform: Platform,
    *,
    kind: DocumentKind,
    patient_id: str,
    actor: str,
    cycle_id: str | None = None,
    step_index: int | None = None,
    analysis_id: str | None = None,
    generation_id: str | None = None,
    signatory: str | None = None,
    today: date | None = None,
    synthesis_text: str | None = None,
) -> tuple[DocumentModel, str | None]:
    """The document model of one kind for one patient (and the synthesis text's source)."""
    settings, store = platform.settings, platform.store
    today = today or local_today(settings)
    crypto = _crypto(settings)
    pharmacy = pharmacy_of(settings)
    patient = _patient(store, crypto, patient_id)
    if cycle_id is not None and kind in ("synthesis", "plan_de_prise"):
        cycle = bpm_cycle(store, crypto, cycle_id)
        if cycle is None or cycle.patient_id != patient_id:
            raise DocumentError(404, "not-found", f"cycle BPM inconnu pour ce patient : {cycle_id}")
    if kind == "synthesis":
        treatments = treatments_of(store, patient_id, today)
        findings, unevaluated = findings_of(store, crypto, patient_id, analysis_id, today)
        text, source = _synthesis_text(store, patient_id, generation_id, findings, synthesis_text)
        model = logic.synthesis(
            pharmacy,
            patient,
            treatments,
            findings,
            unevaluated,
            synthesis_text=text,
            synthesis_from_llm=source.startswith("gen-"),
            pharmacist=signatory or actor,
            today=today,
        )
        return model, source
    if kind == "plan_de_prise":
        return logic.plan_de_prise(
            pharmacy, patient, treatments_of(store, patient_id, today), today=today
        ), None
    step = _step(store, crypto, patient_id, cycle_id, kind=kind, step_index=step_index)
    if kind == "fiche_conseil":
        findings, _ = findings_of(store, crypto, patient_id, analysis_id, today)
        return logic.fiche_conseil(
            pharmacy,
            patient,
            step,
            treatments_of(store, patient_id, today),
            findings,
            today=today,
        ), None
    return logic.compte_rendu(pharmacy, patient, step, today=today), None


# --------------------------------------------------------------------------- public API


def view_of(doc: StoredDocument) -> DocumentView:
    stem = f"{doc.kind}-{doc.created_at.strftime('%Y%m%d')}-{doc.id[4:12]}"
    if doc.signed_from:
        stem += "-signe"
    return DocumentView(
        id=doc.id,
        kind=doc.kind,
        format=doc.format,
        patient_id=doc.patient_id,
        cycle_id=doc.cycle_id,
        template_version=doc.template_version,
        sha256=doc.sha256,
        size=doc.size,
        media_type=MEDIA_TYPES[doc.format],
        filename=f"{stem}.{doc.format}",
        created_at=doc.created_at,
        created_by=doc.created_by,
        signed_from=doc.signed_from,
        signer=doc.signer,
        synthesis_source=doc.synthesis_source,
    )


def generate_document(
    platform: Platform,
    ctx: RequestContext,
    *,
    kind: DocumentKind,
    patient_id: str,
    fmt: DocumentFormat = "pdf",
    cycle_id: str | None = None,
    step_index: int | None = None,
    analysis_id: str | None = None,
    generation_id: str | None = None,
    signatory: str | None = None,
    synthesis_text: str | None = None,
) -> DocumentView:
    """Build, render and store one document; audited (patient read, document created)."""
    try:
        model, source = build_model(
            platform,
            kind=kind,
            patient_id=patient_id,
            actor=ctx.actor,
            cycle_id=cycle_id,
            step_index=step_index,
            analysis_id=analysis_id,
            generation_id=generation_id,
            signatory=signatory,
            synthesis_text=synthesis_text,
        )
    except DocumentError as exc:
        _audit(platform, ctx, "generate", OBJECT_TYPE, "", outcome=exc.slug[:64])
        raise
    try:
        content = render.render(model, fmt)
    except render.RenderError as exc:
        raise DocumentError(409, "render-failed", str(exc)) from exc
    doc = StoredDocument(
        id=repository.new_id(),
        kind=kind,
        format=fmt,
        patient_id=patient_id,
        cycle_id=cycle_id,
        template_version=model.template_version,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        created_at=datetime.now(UTC),
        created_by=ctx.actor,
        synthesis_source=source,
    )
    with platform.store.write() as db:
        repository.insert(db, doc, content)
    with platform.audit.store.write():
        _audit(platform, ctx, "read", "patient", patient_id)
        _audit(platform, ctx, "generate", OBJECT_TYPE, f"{doc.id}:{doc.sha256}")
    return view_of(doc)


def _existing(
    platform: Platform, ctx: RequestContext, document_id: str, action: str
) -> StoredDocument:
    doc = repository.get(platform.store, document_id) if _ID.match(document_id) else None
    if doc is None:
        _audit(
            platform,
            ctx,
            action,
            OBJECT_TYPE,
            document_id[:128] if _ID.match(document_id) else "",
            outcome="not_found",
        )
        raise DocumentError(404, "not-found", f"document inconnu : {document_id[:40]}")
    return doc


def get_document(platform: Platform, ctx: RequestContext, document_id: str) -> DocumentView:
    doc = _existing(platform, ctx, document_id, "read")
    _audit(platform, ctx, "read", OBJECT_TYPE, f"{doc.id}:{doc.sha256}")
    return view_of(doc)


def document_content(
    platform: Platform, ctx: RequestContext, document_id: str
) -> tuple[DocumentView, bytes]:
    """The stored bytes, checked against their recorded SHA-256 before they leave."""
    doc = _existing(platform, ctx, document_id, "download")
    content = repository.content(platform.store, doc.id) or b""
    if hashlib.sha256(content).hexdigest() != doc.sha256:
        _audit(platform, ctx, "download", OBJECT_TYPE, f"{doc.id}:{doc.sha256}", "corrupt")
        raise DocumentError(
            409,
            "document-corrupt",
            "le document enregistré ne correspond plus à son empreinte SHA-256",
        )
    _audit(platform, ctx, "download", OBJECT_TYPE, f"{doc.id}:{doc.sha256}")
    return view_of(doc), content


def list_documents(platform: Platform, ctx: RequestContext, patient_id: str) -> list[DocumentView]:
    docs = repository.of_patient(platform.store, patient_id)
    _audit(platform, ctx, "list", OBJECT_TYPE, patient_id)
    return [view_of(d) for d in docs]


def configured_signer(settings: Settings, *, pin: str | None) -> signing.DocumentSigner:
    """The signer ``documents_signer`` names; ``auto``: PKCS#11 (CPS card through the
    Cryptolib) when its module is configured, else the PKCS#12 file."""
    choice = settings.documents_signer
    if choice == "card":
        return signing.CardSigner(settings, pin=pin)
    if choice == "pkcs11" and settings.documents_pkcs11_module is None:
        raise DocumentError(409, "no-signer", "documents_pkcs11_module n'est pas configuré")
    if choice == "pkcs12" and settings.documents_signing_pkcs12 is None:
        raise DocumentError(409, "no-signer", "documents_signing_pkcs12 n'est pas configuré")
    if choice in ("auto", "pkcs11") and settings.documents_pkcs11_module is not None:
        return signing.Pkcs11Signer(
            settings.documents_pkcs11_module,
            pin=pin,
            token_label=settings.documents_pkcs11_token_label,
            key_label=settings.documents_pkcs11_key_label,
            cert_label=settings.documents_pkcs11_cert_label,
        )
    if settings.documents_signing_pkcs12 is not None:
        try:
            passphrase: bytes | None = read_secret(settings, PASSPHRASE_SECRET).strip()
        except SecretError:
            passphrase = None
        return signing.Pkcs12Signer(settings.documents_signing_pkcs12, passphrase)
    raise DocumentError(
        409,
        "no-signer",
        "aucun moyen de signature configuré (documents_pkcs11_module ou documents_signing_pkcs12)",
    )


def sign_document(
    platform: Platform,
    ctx: RequestContext,
    document_id: str,
    *,
    signer: signing.DocumentSigner | None = None,
    pin: str | None = None,
    reason: str | None = None,
) -> DocumentView:
    """PAdES-sign a stored PDF; the signed copy is a new immutable document, its hash goes
    to the audit log and (hash only) to the outbox stream ``documents``."""
    doc = _existing(platform, ctx, document_id, "sign")
    if doc.format != "pdf":
        raise DocumentError(409, "not-a-pdf", "seuls les documents PDF peuvent être signés")
    if doc.signed_from is not None:
        raise DocumentError(409, "already-signed", "ce document est déjà une copie signée")
    already = repository.signed_copy(platform.store, doc.id)
    if already is not None:
        raise DocumentError(409, "already-signed", f"déjà signé : {already}")
    signer = signer or configured_signer(platform.settings, pin=pin)
    content = repository.content(platform.store, doc.id) or b""
    location = platform.settings.pharmacy_name
    try:
        signed, subject = signing.sign_pdf(
            content,
            signer,
            reason=reason or "Document du pharmacien (bilan partagé de médication)",
            location=location,
        )
    except signing.SigningError as exc:
        _audit(platform, ctx, "sign", OBJECT_TYPE, f"{doc.id}:{doc.sha256}", "refused")
        raise DocumentError(403, "signer-refused", str(exc)) from exc
    now = datetime.now(UTC)
    copy = StoredDocument(
        id=repository.new_id(),
        kind=doc.kind,
        format="pdf",
        patient_id=doc.patient_id,
        cycle_id=doc.cycle_id,
        template_version=doc.template_version,
        sha256=hashlib.sha256(signed).hexdigest(),
        size=len(signed),
        created_at=now,
        created_by=ctx.actor,
        signed_from=doc.id,
        signer=subject[:300],
        synthesis_source=doc.synthesis_source,
    )
    with platform.store.write() as db:
        repository.insert(db, copy, signed)
        enqueue(
            db,
            stream="documents",
            kind="document.signed",
            payload={
                "document_id": copy.id,
                "signed_from": doc.id,
                "kind": copy.kind,
                "sha256": copy.sha256,
                "template_version": copy.template_version,
                "signed_at": now.isoformat(),
            },
            idempotency_key=f"document.signed:{copy.id}",
        )
    _audit(platform, ctx, "sign", OBJECT_TYPE, f"{copy.id}:{copy.sha256}")
    return view_of(copy)


def trust_roots(settings: Settings, override: Path | None = None) -> list[Certificate]:
    path = override or settings.documents_trust_roots
    if path is None:
        return []
    try:
        return list(signing.load_trust_roots(path))
    except (OSError, ValueError) as exc:
        raise DocumentError(409, "trust-roots-unreadable", f"{path}: {exc}") from exc


def verify_bytes(
    data: bytes, roots: Sequence[Certificate], document_id: str | None
) -> VerificationView:
    result = signing.verify_pdf(data, list(roots))
    return VerificationView(
        document_id=document_id,
        intact=result.intact,
        valid=result.valid,
        trusted=result.trusted,
        signer=result.signer,
        signed_at=result.signed_at,
        coverage=result.coverage,
        summary=result.summary,
    )


def verify_document(
    platform: Platform, ctx: RequestContext, document_id: str, *, roots: Path | None = None
) -> VerificationView:
    """Validate a stored signed PDF against the configured trust roots."""
    doc = _existing(platform, ctx, document_id, "verify")
    if doc.format != "pdf":
        raise DocumentError(409, "not-a-pdf", "seuls les documents PDF portent une signature")
    content = repository.content(platform.store, doc.id) or b""
    view = verify_bytes(content, trust_roots(platform.settings, roots), doc.id)
    _audit(platform, ctx, "verify", OBJECT_TYPE, f"{doc.id}:{doc.sha256}")
    return view


# --------------------------------------------------------------------------- exports


def bpm_status_rows(platform: Platform) -> list[tuple[object, ...]]:
    crypto = _crypto(platform.settings)
    rows: list[tuple[object, ...]] = []
    names: dict[str, PatientInfo | None] = {}
    for _cycle_id, cycle in bpm_cycles(platform.store):
        if cycle.patient_id not in names:
            try:
                names[cycle.patient_id] = _patient(platform.store, crypto, cycle.patient_id)
            except DocumentError:
                names[cycle.patient_id] = None
        info = names[cycle.patient_id]
        last = cycle.steps[-1] if cycle.steps else None
        rows.append(
            (
                cycle.patient_id,
                info.family_name if info else "",
                info.given_names if info else "",
                info.birth_date if info else "",
                cycle.year,
                cycle.status,
                cycle.opened_on,
                last.kind if last else "",
                last.performed_on if last else "",
                next_step(cycle) or "",
                cycle.closed_on or "",
                cycle.abandon_reason or "",
            )
        )
    return rows


def findings_rows(platform: Platform) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for analysis_id, patient_ref, recorded_at, result in stored_analyses(platform.store):
        for f in result.findings:
            rows.append(
                (
                    analysis_id,
                    patient_ref or "",
                    recorded_at.date(),
                    f.kind,
                    f.rule,
                    f.severity,
                    logic.PRIORITY_OF.get(f.severity, 2),
                    f.message,
                    f.recommendation_gp or f.recommendation,
                )
            )
    return rows


def export_csv(platform: Platform, ctx: RequestContext, kind: ExportKind) -> bytes:
    """CSV export for the pharmacy's own follow-up; audited (an export of patient data)."""
    if kind == "bpm-status":
        data = logic.to_csv(
            logic.BPM_STATUS_COLUMNS, bpm_status_rows(platform), text_columns=logic.BPM_STATUS_TEXT
        )
    else:
        data = logic.to_csv(
            logic.FINDINGS_COLUMNS, findings_rows(platform), text_columns=logic.FINDINGS_TEXT
        )
    _audit(platform, ctx, "export", "document_export", f"{kind}:{hashlib.sha256(data).hexdigest()}")
    return data
