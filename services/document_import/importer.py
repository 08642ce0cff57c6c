"""The import use cases shared by the API, the CLI and the worker: extract a file, make a
draft of it, correct it, validate it into a prescription, import CSV exports, FHIR bundles
and a watched folder.

Nothing becomes a prescription here except :func:`validate_draft`, which a person triggers.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec

from appliance.store import Store, Versioned
from services.document_import import logic, ocr
from services.document_import import store as repository
from services.document_import.models import (
    Draft,
    DraftContent,
    DraftLine,
    Extraction,
    Field,
    PageText,
)

CSV_MAX_BYTES = 5 * 1024 * 1024


class DraftError(ValueError):
    """A draft that cannot become a prescription yet: ``errors`` lists (field, reason)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {why}" for key, why in errors))
        self.errors = errors


def extract_bytes(store: Store | None, data: bytes, source: str) -> Extraction:
    """The contract object for one file (``hygie prescriptions extract``); raises
    :class:`~services.document_import.ocr.DocumentError` for a file that cannot be read."""
    document = ocr.read_document(data)
    index = repository.catalog_index(store) if store is not None else logic.CatalogIndex([])
    read = logic.read_prescription(document.pages, index)
    return logic.extraction(source, read, len(document.pages), document.ocr_ms)


def extract_file(path: Path, store: Store | None = None) -> Extraction:
    """:func:`extract_bytes` of a file on disk (size checked before reading it whole)."""
    if path.stat().st_size > ocr.MAX_FILE_BYTES:
        raise ocr.DocumentError(
            "file-too-large",
            f"fichier trop volumineux (maximum {ocr.MAX_FILE_BYTES // (1024 * 1024)} Mo)",
            413,
        )
    return extract_bytes(store, path.read_bytes(), str(path))


def read_pages(store: Store, pages: list[PageText]) -> DraftContent:
    return logic.draft_content(logic.read_prescription(pages, repository.catalog_index(store)))


def import_document(store: Store, data: bytes, filename: str, actor: str) -> Versioned[Draft]:
    """OCR a scan or PDF and keep it as a draft (version 1) with its page images."""
    document = ocr.read_document(data)
    content = read_pages(store, document.pages)
    draft = Draft(
        draft_id=str(uuid.uuid4()),
        source="pdf" if document.kind == "pdf" else "scan",
        filename=filename[:255],
        sha256=hashlib.sha256(data).hexdigest(),
        pages=len(document.pages),
        ocr_ms=document.ocr_ms,
        content=content,
    )
    pngs = [ocr.page_png(image) for image in document.images]
    return repository.save(store, draft, actor=actor, expected_version=0, pages=pngs)


def correct(
    store: Store, item: Versioned[Draft], content: DraftContent, *, actor: str, expected: int
) -> Versioned[Draft]:
    """A reviewer's correction: a new version (the previous ones stay in the history)."""
    if item.entity.status != "draft":
        raise DraftError([("status", f"this import is already {item.entity.status}")])
    updated = msgspec.structs.replace(item.entity, content=content)
    return repository.save(store, updated, actor=actor, expected_version=expected)


def reject(store: Store, item: Versioned[Draft], *, actor: str, expected: int) -> Versioned[Draft]:
    """Close a draft without a prescription (a new version, status ``rejected``)."""
    closed = msgspec.structs.replace(item.entity, status="rejected")
    return repository.save(store, closed, actor=actor, expected_version=expected)


def patched(content: DraftContent, changes: dict[str, Any]) -> DraftContent:
    """The content with the given top-level fields replaced (PATCH)."""
    return msgspec.structs.replace(content, **changes)


def _posology(line: DraftLine) -> Any:
    from services.prescriptions.models import Duration, Posology

    duration = (
        Duration(value=line.duration_value, unit=line.duration_unit or "day")
        if line.duration_value
        else None
    )
    per_day = line.per_day
    if line.times and per_day is not None and per_day != len(set(line.times)):
        per_day = None  # the times of day are what is written; a clash is left to the text
    return Posology(
        dose=line.dose,
        unit=line.unit,
        times_per_day=per_day,
        times_of_day=line.times,
        duration=duration,
        as_needed=line.as_needed,
    )


def to_prescription(content: DraftContent, today: date) -> Any:
    """The prescription a validated draft becomes; :class:`DraftError` lists what is
    missing or wrong (nothing is guessed: the reviewer fills it in)."""
    from services.prescriptions import logic as rx_logic
    from services.prescriptions.models import Prescriber, Prescription, PrescriptionLine

    errors: list[tuple[str, str]] = []
    if not content.patient_id:
        errors.append(("patient_id", "choose the patient this prescription belongs to"))
    if not content.prescriber_name.value:
        errors.append(("prescriber_name", "the prescriber's name is required"))
    day: date | None = None
    try:
        day = date.fromisoformat(content.prescribed_on.value or "")
    except ValueError:
        errors.append(("prescribed_on", "a date YYYY-MM-DD is required"))
    if not content.lines:
        errors.append(("lines", "a prescription needs at least one line"))
    if errors or day is None:
        raise DraftError(errors)
    lines = tuple(
        PrescriptionLine(
            cis=line.cis,
            cip13=line.cip13,
            label=(line.label or line.text[:200]).strip() or None,
            posology=_posology(line),
            original_text=line.text or None,
            substitutable=not line.non_substitutable,
        )
        for line in content.lines
    )
    try:
        prescription = Prescription(
            patient_id=content.patient_id or "",
            prescriber=Prescriber(
                name=(content.prescriber_name.value or "")[:100],
                rpps=content.prescriber_rpps.value,
            ),
            prescribed_on=day,
            lines=lines,
            renewals=content.renewals or 0,
        )
        prescription = msgspec.convert(msgspec.to_builtins(prescription), Prescription)
    except msgspec.ValidationError as error:
        raise DraftError([("content", str(error))]) from None
    prescription = rx_logic.normalise(prescription)
    found = [(e.key, e.message) for e in rx_logic.mandatory_errors(prescription, today)]
    if found:
        raise DraftError(found)
    return prescription


def validate_draft(
    store: Store, item: Versioned[Draft], *, actor: str, expected: int, today: date
) -> tuple[Versioned[Draft], str]:
    """A person confirmed the draft: create the prescription (prescriptions service) and
    mark the draft validated with its id. Returns (draft version, prescription id)."""
    from services.patients import patient_birth_date
    from services.prescriptions.api import store_new

    if item.entity.status != "draft":
        raise DraftError([("status", f"this import is already {item.entity.status}")])
    if item.version != expected:
        raise DraftError([("expected_version", f"the draft is at version {item.version}")])
    prescription = to_prescription(item.entity.content, today)
    birth = patient_birth_date(store, prescription.patient_id)
    if birth is None:
        raise DraftError([("patient_id", "no such patient")])
    if prescription.prescribed_on < birth:
        raise DraftError([("prescribed_on", "must not be before the birth date")])
    saved = store_new(store, prescription, actor)
    done = msgspec.structs.replace(item.entity, status="validated", prescription_id=saved.entity_id)
    version = repository.save(store, done, actor=actor, expected_version=expected)
    return version, saved.entity_id


# --------------------------------------------------------------------------- CSV


def _csv_line(index: logic.CatalogIndex, row: logic.CsvRow) -> DraftLine:
    match = logic.match_line(index, row.product) if row.product else None
    parsed = logic.parse_posology(row.posology or "")
    cis = row.cis if row.cis and row.cis.isdigit() and len(row.cis) == 8 else None
    cip13 = row.cip13 if row.cip13 and row.cip13.isdigit() and len(row.cip13) == 13 else None
    text = " ".join(x for x in (row.product, row.posology) if x) or (cip13 or cis or "")
    return DraftLine(
        text=text[:2000],
        cis=cis or (match.cis if match else None),
        cip13=cip13 or (match.cip13 if match else None),
        label=(row.product or (match.name if match else None) or "")[:200] or None,
        substance=(match.substance or "")[:200] or None if match else None,
        atc=match.atc if match and match.atc and len(match.atc) <= 7 else None,
        strength=(match.strength if match else None),
        dose=parsed.dose if parsed.dose and parsed.dose <= 100_000 else None,
        unit=parsed.unit,
        per_day=parsed.per_day if parsed.per_day and parsed.per_day <= 48 else None,
        times=parsed.times,
        duration_value=parsed.duration_value
        if parsed.duration_value and parsed.duration_value <= 3650
        else None,
        duration_unit=parsed.duration_unit
        if parsed.duration_value and parsed.duration_value <= 3650
        else None,
        as_needed=parsed.as_needed,
        quantity=parsed.quantity,
        non_substitutable=parsed.non_substitutable,
        match_score=1.0 if (cis or cip13) else (match.score if match else 0.0),
        confidence=1.0 if (cis or cip13) else (match.score if match else 0.0),
    )


def import_csv(store: Store, data: bytes, filename: str, actor: str) -> list[Versioned[Draft]]:
    """A pharmacy-software CSV export: one draft per prescription number."""
    if len(data) > CSV_MAX_BYTES:
        raise logic.CsvError(f"fichier CSV trop volumineux (maximum {CSV_MAX_BYTES // 2**20} Mo)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    if "\x00" in text:
        raise logic.CsvError("ce fichier n'est pas un CSV (contenu binaire)")
    rows = logic.read_csv(text)
    if not rows:
        raise logic.CsvError("aucune ligne de prescription dans le fichier")
    index = repository.catalog_index(store)
    digest = hashlib.sha256(data).hexdigest()
    saved: list[Versioned[Draft]] = []
    for group in logic.csv_pages(rows).values():
        first = group[0]
        day = logic.parse_date(first.date or "") if first.date else None
        if day is None and first.date:
            try:
                day = date.fromisoformat(first.date)
            except ValueError:
                day = None
        rpps = logic.valid_rpps(first.prescriber_rpps or "")
        content = DraftContent(
            patient_name=Field(value=first.patient_name, confidence=1.0)
            if first.patient_name
            else Field(),
            prescriber_name=Field(value=first.prescriber_name[:200], confidence=1.0)
            if first.prescriber_name
            else Field(),
            prescriber_rpps=Field(value=rpps, confidence=1.0) if rpps else Field(),
            prescribed_on=Field(value=day.isoformat(), confidence=1.0) if day else Field(),
            lines=tuple(_csv_line(index, row) for row in group[:100]),
        )
        draft = Draft(
            draft_id=str(uuid.uuid4()),
            source="csv",
            filename=filename[:255],
            sha256=digest,
            content=content,
        )
        saved.append(repository.save(store, draft, actor=actor, expected_version=0))
    return saved


# --------------------------------------------------------------------------- watched folder


@dataclass(frozen=True)
class FolderOutcome:
    filename: str
    outcome: str
    """``draft:<id>``, ``csv:<n> drafts``, ``fhir:<report>``, ``error:<message>``."""
    drafts: tuple[str, ...] = ()


SCAN_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pdf"}


def process_folder(
    store: Store, folder: Path, *, actor: str, fhir_import: Any = None, limit: int = 20
) -> list[FolderOutcome]:
    """Import the new files of the watched folder (each file once, by content hash): scans
    and PDFs become drafts, CSV exports drafts, FHIR bundles go through the FHIR service.
    A file that cannot be read is logged with its reason and left in place."""
    outcomes: list[FolderOutcome] = []
    if not folder.is_dir():
        return outcomes
    for path in sorted(folder.iterdir()):
        if len(outcomes) >= limit:
            break
        if not path.is_file() or path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        if suffix not in SCAN_SUFFIXES | {".csv", ".json"}:
            continue
        if path.stat().st_size > ocr.MAX_FILE_BYTES:
            outcome = "error:fichier trop volumineux"
            data_hash = f"size:{path.name}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
            if not repository.folder_seen(store, data_hash):
                repository.mark_folder_seen(store, data_hash, path.name, _now(), outcome)
                outcomes.append(FolderOutcome(path.name, outcome))
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if repository.folder_seen(store, digest):
            continue
        made: tuple[str, ...] = ()
        try:
            if suffix == ".csv":
                drafts = import_csv(store, data, path.name, actor)
                made = tuple(d.entity_id for d in drafts)
                outcome = f"csv:{len(drafts)} drafts"
            elif suffix == ".json":
                if fhir_import is None:
                    outcome = "error:FHIR import unavailable"
                else:
                    outcome = f"fhir:{fhir_import(data)}"
            else:
                draft = import_document(store, data, path.name, actor)
                made = (draft.entity_id,)
                outcome = f"draft:{draft.entity_id}"
        except (ocr.DocumentError, logic.CsvError) as error:
            outcome = f"error:{error}"
        except ValueError as error:
            outcome = f"error:{error}"
        repository.mark_folder_seen(store, digest, path.name, _now(), outcome)
        outcomes.append(FolderOutcome(path.name, outcome, made))
    return outcomes


def _now() -> str:
    return datetime.now(UTC).isoformat()
