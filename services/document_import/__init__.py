"""Prescription import: OCR of scans and PDFs, extraction of prescriber, patient and lines,
matching to the BDPM catalog, drafts reviewed by a person before they become prescriptions;
CSV exports, FHIR bundles and a watched folder. See docs/document_import.md.

Public functions: :func:`extract_file` / :func:`extract_bytes` (the contract of
``hygie prescriptions extract``), :func:`parse_posology`, :func:`import_document`,
:func:`render_synthetic_prescription` (synthetic scans for demos and the benchmark).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from appliance.audit import AuditEvent
from appliance.plugin import ServicePlugin
from services.document_import.api import ImportController
from services.document_import.importer import (
    DraftError,
    extract_bytes,
    extract_file,
    import_csv,
    import_document,
    process_folder,
)
from services.document_import.logic import parse_posology
from services.document_import.models import Extraction, ParsedPosology
from services.document_import.ocr import DocumentError
from services.document_import.store import MIGRATIONS
from services.document_import.synthetic import SyntheticPrescription, render_synthetic_prescription

if TYPE_CHECKING:
    from huey import Huey

    from appliance.platform import Platform

FOLDER_ACTOR = "system:import-folder"


def scan_import_folder(platform: Platform) -> int:
    """Process the watched folder once (the worker's periodic task); returns files handled."""
    folder = platform.settings.import_folder
    if folder is None:
        return 0

    def fhir_import(data: bytes) -> str:
        from services.fhir import BundleError, import_bundle
        from services.patients import patient_crypto
        from services.patients.api import today

        try:
            bundle = json.loads(data)
            report = import_bundle(
                platform.store,
                patient_crypto(platform.settings),
                bundle,
                actor=FOLDER_ACTOR,
                today=today(platform),
            )
        except (ValueError, BundleError) as error:
            raise ValueError(f"lot FHIR refusé : {error}") from None
        return f"{report.bundle_type}, {report.rejected} rejected"

    outcomes = process_folder(platform.store, folder, actor=FOLDER_ACTOR, fhir_import=fhir_import)
    with platform.audit.store.write():
        for outcome in outcomes:
            for draft_id in outcome.drafts or ("",):
                platform.audit.record(
                    AuditEvent(
                        actor=FOLDER_ACTOR,
                        role="system",
                        action="import",
                        object_type="prescription_import",
                        object_id=draft_id,  # never the file name: it may name the patient
                        purpose="care",
                        client_addr="local",
                        outcome="success" if draft_id else outcome.outcome.split(":")[0],
                    )
                )
    return len(outcomes)


def register_tasks(huey: Huey, platform: Platform) -> None:
    from huey import crontab

    every = platform.settings.import_folder_every_min

    @huey.periodic_task(crontab(minute=f"*/{every}"))  # type: ignore[untyped-decorator]
    def import_folder_scan() -> None:
        scan_import_folder(platform)


PLUGIN = ServicePlugin(
    name="document_import",
    controllers=(ImportController,),
    migrations=MIGRATIONS,
    register_tasks=register_tasks,
)

__all__ = [
    "PLUGIN",
    "DocumentError",
    "DraftError",
    "Extraction",
    "ParsedPosology",
    "SyntheticPrescription",
    "extract_bytes",
    "extract_file",
    "import_csv",
    "import_document",
    "parse_posology",
    "process_folder",
    "render_synthetic_prescription",
    "scan_import_folder",
]
