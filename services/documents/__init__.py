"""BPM documents: the synthesis for the médecin traitant, the plan de prise, the fiche
conseil and the compte rendu d'entretien in PDF, DOCX and HTML from one document model;
PAdES signatures (CPS card through PKCS#11, or a PKCS#12 file); CSV exports. Generated and
signed documents are stored append-only and audited with their SHA-256. See
docs/documents.md.

Public functions for the web UI and other services: :func:`generate_document`,
:func:`sign_document`, :func:`verify_document`, :func:`document_content`,
:func:`list_documents`, :func:`export_csv` (each audits with the caller's context and
raises :class:`DocumentError` on bad input).
"""

from __future__ import annotations

from appliance.plugin import ServicePlugin
from services.documents.api import DocumentController
from services.documents.cli import documents as documents_group
from services.documents.models import DocumentView, GenerateInput, VerificationView
from services.documents.signing import DocumentSigner, Pkcs11Signer, Pkcs12Signer
from services.documents.store import MIGRATIONS
from services.documents.workflow import (
    DocumentError,
    configured_signer,
    document_content,
    export_csv,
    generate_document,
    get_document,
    list_documents,
    sign_document,
    verify_document,
)

PLUGIN = ServicePlugin(
    name="documents",
    controllers=(DocumentController,),
    migrations=MIGRATIONS,
    cli=documents_group,
)

__all__ = [
    "PLUGIN",
    "DocumentError",
    "DocumentSigner",
    "DocumentView",
    "GenerateInput",
    "Pkcs11Signer",
    "Pkcs12Signer",
    "VerificationView",
    "configured_signer",
    "document_content",
    "export_csv",
    "generate_document",
    "get_document",
    "list_documents",
    "sign_document",
    "verify_document",
]
