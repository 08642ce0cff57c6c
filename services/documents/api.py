"""HTTP API of documents: generate, list, read, download, sign, verify, CSV exports.

The handlers are thin: :mod:`services.documents.workflow` does the work and the auditing
(the web UI calls the same functions), and turns bad input into :class:`DocumentError`,
answered here as RFC 9457 problem details.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import requires
from services.documents import workflow
from services.documents.models import (
    DocumentView,
    ExportKind,
    GenerateInput,
    SignInput,
    VerificationView,
)

READ = "documents:read"
WRITE = "documents:write"
SIGN = "documents:sign"
DocumentIdParam = Annotated[str, Parameter(pattern=r"^doc-[0-9a-f]{20}$", max_length=24)]
T = TypeVar("T")


def _answer(call: Callable[[], T]) -> T:
    try:
        return call()
    except workflow.DocumentError as exc:
        raise Problem(exc.status, exc.slug, str(exc)) from exc


class DocumentController(Controller):
    path = "/api/v1/documents"
    tags = ["documents"]

    @post("/", guards=[requires(WRITE)], sync_to_thread=True, status_code=201)
    def generate(
        self,
        data: JSONBody[GenerateInput],
        platform: NamedDependency[Platform],
        ctx: NamedDependency[RequestContext],
    ) -> DocumentView:
        """Generate a document for a patient (and a BPM cycle) in PDF, DOCX or HTML; it is
        stored (immutable) and audited."""
        return _answer(
            lambda: workflow.generate_document(
                platform,
                ctx,
                kind=data.kind,
                patient_id=data.patient_id,
                fmt=data.format,
                cycle_id=data.cycle_id,
                step_index=data.step_index,
                analysis_id=data.analysis_id,
                generation_id=data.generation_id,
                synthesis_text=data.synthesis_text,
            )
        )

    @get("/", guards=[requires(READ)], sync_to_thread=True)
    def list_documents(
        self,
        patient_id: Annotated[UUID, Parameter(query="patient_id")],
        platform: NamedDependency[Platform],
        ctx: NamedDependency[RequestContext],
    ) -> list[DocumentView]:
        """A patient's documents, newest first (audited)."""
        return workflow.list_documents(platform, ctx, str(patient_id))

    @get("/{document_id:str}", guards=[requires(READ)], sync_to_thread=True)
    def get_document(
        self,
        document_id: FromPath[DocumentIdParam],
        platform: NamedDependency[Platform],
        ctx: NamedDependency[RequestContext],
    ) -> DocumentView:
        """One document's metadata (audited)."""
        return _answer(lambda: workflow.get_document(platform, ctx, document_id))

    @get(
        "/{document_id:str}/content",
        guards=[requires(READ)],
        sync_to_thread=True,
        media_type="application/octet-stream",
    )
    def download(
        self,
        document_id: FromPath[DocumentIdParam],
        platform: NamedDependency[Platform],
        ctx: NamedDependency[RequestContext],
    ) -> Response[bytes]:
        """The document's bytes (PDF, DOCX or HTML), checked against their SHA-256 (audited)."""
        view, content = _answer(lambda: workflow.document_content(platform, ctx, document_id))
        return Response(
            content,
            media_type=view.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{view.filename}"',
                "X-Content-SHA256": view.sha256,
                "X-Content-Type-Options": "nosniff",
            },
        )

    @post(
        "/{document_id:str}/signature",
        guards=[requires(SIGN)],
        sync_to_thread=True,
        status_code=201,
    )
    def sign(
        self,
        document_id: FromPath[DocumentIdParam],
        data: JSONBody[SignInput],
        platform: NamedDependency[Platform],
        ctx: NamedDependency[RequestContext],
    ) -> DocumentView:
        """PAdES-sign a PDF with the configured signer (CPS card: give its PIN); answers the
        signed copy, a new document."""
        return _answer(
            lambda: workflow.sign_document(
                platform, ctx, document_id, pin=data.pin, reason=data.reason
            )
        )

    @get("/{document_id:str}/verification", guards=[requires(READ)], sync_to_thread=True)
    def verify(
        self,
        document_id: FromPath[DocumentIdParam],
        platform: NamedDependency[Platform],
        ctx: NamedDependency[RequestContext],
    ) -> VerificationView:
        """Validate a signed PDF against the configured trust roots."""
        return _answer(lambda: workflow.verify_document(platform, ctx, document_id))

    @get(
        "/exports/{export:str}",
        guards=[requires(READ)],
        sync_to_thread=True,
        media_type="text/csv",
    )
    def export(
        self,
        export: FromPath[
            Annotated[str, Parameter(pattern=r"^(bpm-status|findings)\.csv$", max_length=20)]
        ],
        platform: NamedDependency[Platform],
        ctx: NamedDependency[RequestContext],
    ) -> Response[bytes]:
        """CSV (``;``, UTF-8 with BOM) of every patient's BPM status or of stored findings."""
        kind: ExportKind = "bpm-status" if export.startswith("bpm-status") else "findings"
        data = _answer(lambda: workflow.export_csv(platform, ctx, kind))
        return Response(
            data,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{export}"'},
        )
