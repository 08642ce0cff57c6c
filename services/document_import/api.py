"""HTTP API of prescription import: upload a scan or PDF (→ draft), read the draft and its
page images side by side, correct it, validate it into a prescription; CSV exports too.

Guarded by ``prescriptions:import``; validation also needs ``patients:write`` (it writes
the patient's record). A draft holds patient data (names), so every access is audited with
ids only. See docs/document_import.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Response, get, patch, post, put
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, FromPath, JSONBody, Parameter

from appliance.audit import AuditLog
from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.problems import PROBLEM_MEDIA_TYPE, Problem, ProblemDetail
from appliance.security import requires
from appliance.store import Store, VersionConflictError, Versioned
from services.document_import import importer, logic, ocr
from services.document_import import store as repository
from services.document_import.models import (
    CsvImportResult,
    Draft,
    DraftContent,
    DraftPatch,
    DraftSummary,
    DraftUpdate,
    DraftView,
    ValidateRequest,
    ValidationResult,
)
from services.patients.api import record, today

OBJECT_TYPE = "prescription_import"
IMPORT = "prescriptions:import"
WRITE = "patients:write"
BASE = "/api/v1/imports"
UPLOAD_LIMIT = ocr.MAX_FILE_BYTES + 64 * 1024


def _unprocessable(description: str) -> dict[int, ResponseSpec]:
    return {
        422: ResponseSpec(
            data_container=ProblemDetail,
            media_type=PROBLEM_MEDIA_TYPE,
            description=description,
            generate_examples=False,
        )
    }


@dataclass
class UploadForm:
    """``multipart/form-data`` with one ``file`` part."""

    file: UploadFile


def view(item: Versioned[Draft]) -> DraftView:
    draft = item.entity
    return DraftView(
        id=item.entity_id,
        version=item.version,
        recorded_at=item.recorded_at,
        recorded_by=item.recorded_by,
        status=draft.status,
        source=draft.source,
        filename=draft.filename,
        sha256=draft.sha256,
        pages=draft.pages,
        ocr_ms=draft.ocr_ms,
        content=draft.content,
        prescription_id=draft.prescription_id,
        page_urls=[f"{BASE}/{item.entity_id}/pages/{n}" for n in range(1, draft.pages + 1)],
    )


def _read_upload(form: UploadForm, limit: int) -> tuple[bytes, str]:
    upload = form.file
    if not isinstance(upload, UploadFile):
        raise Problem(400, "missing-file", "envoyez le fichier dans le champ « file »")
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise Problem(413, "file-too-large", f"fichier trop volumineux (maximum {limit} octets)")
    return data, (upload.filename or "upload")[:255]


def _document_problem(error: ocr.DocumentError) -> Problem:
    return Problem(error.status, error.code, error.message)


def _draft_problem(error: importer.DraftError) -> Problem:
    return Problem(
        422,
        "draft-incomplete",
        "le brouillon ne peut pas encore devenir une ordonnance",
        extra={"errors": [{"key": key, "message": why} for key, why in error.errors]},
    )


class ImportController(Controller):
    path = BASE
    tags = ["prescription import"]

    def _existing(
        self, st: Store, audit: AuditLog, ctx: RequestContext, draft_id: str, action: str
    ) -> Versioned[Draft]:
        item = repository.get(st, draft_id)
        if item is None:
            record(audit, ctx, action, OBJECT_TYPE, [draft_id], outcome="not_found")
            raise Problem(404, "not-found", f"no import '{draft_id}'")
        return item

    @post(
        "/",
        guards=[requires(IMPORT)],
        sync_to_thread=True,
        request_max_body_size=UPLOAD_LIMIT,
        status_code=201,
        responses=_unprocessable(
            "Unreadable file (unsupported-format, unreadable-image, unreadable-pdf, "
            "encrypted-pdf, ocr-timeout): French detail for the counter"
        ),
    )
    def upload(
        self,
        data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> DraftView:
        """Upload a prescription scan (PNG, JPEG, TIFF) or PDF: OCR, extraction and catalog
        matching make a **draft** (nothing becomes a prescription before validation)."""
        content, filename = _read_upload(data, ocr.MAX_FILE_BYTES)
        try:
            saved = importer.import_document(store, content, filename, ctx.actor)
        except ocr.DocumentError as error:
            record(audit, ctx, "import", OBJECT_TYPE, [], outcome="rejected")
            raise _document_problem(error) from None
        record(audit, ctx, "import", OBJECT_TYPE, [saved.entity_id])
        return view(saved)

    @post(
        "/csv",
        guards=[requires(IMPORT)],
        sync_to_thread=True,
        request_max_body_size=importer.CSV_MAX_BYTES + 64 * 1024,
        status_code=201,
        responses=_unprocessable("Unreadable CSV (unreadable-csv): French detail"),
    )
    def upload_csv(
        self,
        data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> CsvImportResult:
        """A pharmacy-software CSV export (column mapping in docs/document_import.md): one
        draft per prescription number."""
        content, filename = _read_upload(data, importer.CSV_MAX_BYTES)
        try:
            drafts = importer.import_csv(store, content, filename, ctx.actor)
        except logic.CsvError as error:
            record(audit, ctx, "import", OBJECT_TYPE, [], outcome="rejected")
            raise Problem(422, "unreadable-csv", str(error)) from None
        ids = [d.entity_id for d in drafts]
        record(audit, ctx, "import", OBJECT_TYPE, ids)
        return CsvImportResult(
            drafts=ids, rows=sum(len(d.entity.content.lines) for d in drafts), errors=[]
        )

    @get("/", guards=[requires(IMPORT)], sync_to_thread=True)
    def list_imports(
        self,
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        status: Annotated[
            Literal["draft", "validated", "rejected"] | None, Parameter(query="status")
        ] = "draft",
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=1_000_000)] = 0,
    ) -> list[DraftSummary]:
        """Imports waiting for review (``status=draft``), most recent first."""
        items = repository.listing(store, status, limit, offset)
        record(audit, ctx, "list", OBJECT_TYPE, [i.entity_id for i in items])
        return [
            DraftSummary(
                id=i.entity_id,
                version=i.version,
                status=i.entity.status,
                source=i.entity.source,
                filename=i.entity.filename,
                recorded_at=i.recorded_at,
                lines=len(i.entity.content.lines),
            )
            for i in items
        ]

    @get("/{draft_id:uuid}", guards=[requires(IMPORT)], sync_to_thread=True)
    def get_import(
        self,
        draft_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> DraftView:
        """The latest version of a draft, with the URLs of its page images."""
        item = self._existing(store, audit, ctx, str(draft_id), "read")
        record(audit, ctx, "read", OBJECT_TYPE, [item.entity_id])
        return view(item)

    @get("/{draft_id:uuid}/history", guards=[requires(IMPORT)], sync_to_thread=True)
    def get_history(
        self,
        draft_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> list[DraftView]:
        """Every version of the draft: what OCR read, then each correction (who, when)."""
        item = self._existing(store, audit, ctx, str(draft_id), "history")
        record(audit, ctx, "history", OBJECT_TYPE, [item.entity_id])
        return [view(v) for v in repository.history(store, item.entity_id)]

    @get(
        "/{draft_id:uuid}/pages/{page:int}",
        guards=[requires(IMPORT)],
        sync_to_thread=True,
        media_type="image/png",
    )
    def get_page(
        self,
        draft_id: FromPath[UUID],
        page: Annotated[int, Parameter(ge=1, le=ocr.MAX_PAGES)],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> Response[bytes]:
        """The page image (PNG, grayscale, straightened) for the side-by-side review."""
        item = self._existing(store, audit, ctx, str(draft_id), "read_page")
        png = repository.page(store, item.entity_id, page)
        if png is None:
            raise Problem(404, "not-found", f"no page {page} in import '{item.entity_id}'")
        record(audit, ctx, "read_page", OBJECT_TYPE, [item.entity_id])
        return Response(content=png, media_type="image/png")

    @put("/{draft_id:uuid}", guards=[requires(IMPORT)], sync_to_thread=True)
    def replace_import(
        self,
        draft_id: FromPath[UUID],
        data: JSONBody[DraftUpdate],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> DraftView:
        """Replace the reviewable content (a new version; 409 when ``expected_version`` is
        stale)."""
        item = self._existing(store, audit, ctx, str(draft_id), "correct")
        return self._correct(store, audit, ctx, item, data.content, data.expected_version)

    @patch("/{draft_id:uuid}", guards=[requires(IMPORT)], sync_to_thread=True)
    def patch_import(
        self,
        draft_id: FromPath[UUID],
        data: JSONBody[DraftPatch],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> DraftView:
        """Correct some fields (those present in the body replace the draft's)."""
        item = self._existing(store, audit, ctx, str(draft_id), "correct")
        changes = {
            key: value
            for key, value in msgspec.structs.asdict(data).items()
            if key != "expected_version" and value is not None
        }
        content = importer.patched(item.entity.content, changes)
        return self._correct(store, audit, ctx, item, content, data.expected_version)

    def _correct(
        self,
        store: Store,
        audit: AuditLog,
        ctx: RequestContext,
        item: Versioned[Draft],
        content: DraftContent,
        expected: int,
    ) -> DraftView:
        try:
            saved = importer.correct(store, item, content, actor=ctx.actor, expected=expected)
        except importer.DraftError as error:
            record(audit, ctx, "correct", OBJECT_TYPE, [item.entity_id], outcome="rejected")
            raise Problem(409, "import-closed", str(error)) from None
        except VersionConflictError:
            record(audit, ctx, "correct", OBJECT_TYPE, [item.entity_id], outcome="conflict")
            raise
        record(audit, ctx, "correct", OBJECT_TYPE, [item.entity_id])
        return view(saved)

    @post("/{draft_id:uuid}/reject", guards=[requires(IMPORT)], sync_to_thread=True)
    def reject_import(
        self,
        draft_id: FromPath[UUID],
        data: JSONBody[ValidateRequest],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> DraftView:
        """Discard an import that is not a prescription to keep (wrong file, duplicate): it
        stays in the history as ``rejected`` and can no longer be validated."""
        item = self._existing(store, audit, ctx, str(draft_id), "reject")
        if item.entity.status != "draft":
            raise Problem(409, "import-closed", f"this import is already {item.entity.status}")
        try:
            saved = importer.reject(store, item, actor=ctx.actor, expected=data.expected_version)
        except VersionConflictError:
            record(audit, ctx, "reject", OBJECT_TYPE, [item.entity_id], outcome="conflict")
            raise
        record(audit, ctx, "reject", OBJECT_TYPE, [item.entity_id])
        return view(saved)

    @post(
        "/{draft_id:uuid}/validate",
        guards=[requires(IMPORT, WRITE)],
        sync_to_thread=True,
        status_code=201,
        responses=_unprocessable("draft-incomplete: 'errors' lists what is missing"),
    )
    def validate_import(
        self,
        draft_id: FromPath[UUID],
        data: JSONBody[ValidateRequest],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> ValidationResult:
        """A person checked the draft against the scan: the prescription is created (through
        the prescriptions service) and the draft is closed. 422 lists what is missing."""
        item = self._existing(store, audit, ctx, str(draft_id), "validate")
        if item.entity.status != "draft":
            raise Problem(409, "import-closed", f"this import is already {item.entity.status}")
        if item.version != data.expected_version:
            record(audit, ctx, "validate", OBJECT_TYPE, [item.entity_id], outcome="conflict")
            raise Problem(
                409,
                "version-conflict",
                f"the draft is at version {item.version}, not {data.expected_version}",
            )
        try:
            saved, prescription_id = importer.validate_draft(
                store,
                item,
                actor=ctx.actor,
                expected=data.expected_version,
                today=today(platform),
            )
        except importer.DraftError as error:
            record(audit, ctx, "validate", OBJECT_TYPE, [item.entity_id], outcome="rejected")
            raise _draft_problem(error) from None
        record(audit, ctx, "validate", OBJECT_TYPE, [item.entity_id])
        record(audit, ctx, "create", "prescription", [prescription_id])
        return ValidationResult(
            draft_id=item.entity_id, prescription_id=prescription_id, draft_version=saved.version
        )
