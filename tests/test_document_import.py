"""Prescription import with the real parts: Tesseract on synthetic scans, pdfium on real
PDFs (text layer, image-only, encrypted, 300 pages), the API review flow on the encrypted
store, the ``hygie prescriptions extract`` contract, CSV and the watched folder."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from appliance.cli import main
from appliance.platform import Platform
from services.document_import import (
    import_document,
    process_folder,
    render_synthetic_prescription,
)
from services.document_import import store as repository
from services.document_import.ocr import DocumentError, read_document

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bdpm-mini"
DOLIPRANE = ("60234100", "DOLIPRANE 1000 mg, comprimé")
AMLODIPINE = ("65728601", "AMLODIPINE BIOGARAN 5 mg, gélule")
CONTRACT_KEYS = {"source", "prescriber", "date", "patient", "lines", "pages", "ocr_ms"}
LINE_KEYS = {"text", "cis", "cip13", "substance", "atc", "strength", "posology", "confidence"}
POSOLOGY_KEYS = {"dose", "unit", "per_day", "times", "duration_days", "as_needed"}


@pytest.fixture(scope="module")
def scan() -> Any:
    return render_synthetic_prescription(
        [DOLIPRANE, AMLODIPINE], seed=3, layout="classic", handwriting=False, dpi=150
    )


@pytest.fixture
def catalog(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["catalog", "import", str(FIXTURE)])
    assert result.exit_code == 0, result.output


def _pdf(pages: int = 1, *, text: str | None = None, encrypt: str | None = None) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, encrypt=encrypt)
    for _ in range(pages):
        if text:
            y = 780
            for line in text.splitlines():
                pdf.drawString(60, y, line)
                y -= 18
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width × height (a decompression bomb's header) with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- OCR


def test_ocr_of_a_synthetic_scan_with_word_confidences(scan: Any) -> None:
    document = read_document(scan.png())
    assert len(document.pages) == 1
    assert document.pages[0].source == "ocr"
    text = "\n".join(document.pages[0].lines)
    assert "DOLIPRANE" in text.upper()
    assert "BIOGARAN" in text.upper()
    assert scan.rpps in text.replace(" ", "")
    words = document.pages[0].words
    assert words
    assert all(0 <= w.confidence <= 100 for w in words)
    assert sum(w.confidence for w in words) / len(words) > 60
    assert document.images[0].mode == "L"


def test_multipage_tiff_jpeg_and_image_only_pdf(scan: Any) -> None:
    blank = Image.new("L", (600, 800), 255)
    buffer = io.BytesIO()
    scan.image.save(buffer, format="TIFF", save_all=True, append_images=[blank], dpi=(150, 150))
    tiff = read_document(buffer.getvalue())
    assert len(tiff.pages) == 2
    assert any("DOLIPRANE" in line.upper() for line in tiff.pages[0].lines)
    assert tiff.pages[1].lines == ()

    buffer = io.BytesIO()
    scan.image.save(buffer, format="JPEG", quality=70, dpi=(150, 150))
    jpeg = read_document(buffer.getvalue())
    assert any("AMLODIPINE" in line.upper() for line in jpeg.pages[0].lines)

    buffer = io.BytesIO()
    scan.image.save(buffer, format="PDF", resolution=150)
    scanned_pdf = read_document(buffer.getvalue())
    assert scanned_pdf.kind == "pdf"
    assert scanned_pdf.pages[0].source == "ocr"
    assert any("BIOGARAN" in line.upper() for line in scanned_pdf.pages[0].lines)


def test_pdf_text_layer_is_used_without_ocr() -> None:
    data = _pdf(text="Docteur Jean MARTIN\nRPPS 10000000009\nDOLIPRANE 1000 mg cp\n1 cp le soir")
    document = read_document(data)
    page = document.pages[0]
    assert page.source == "text-layer"
    assert "RPPS 10000000009" in page.lines
    assert page.line_confidences[0] == 100.0


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: b"Bonjour, ceci n'est pas une image", "unsupported-format"),
        (lambda: b"PK\x03\x04" + b"\x00" * 100, "unsupported-format"),
        (lambda: _png_header_only(30_000, 30_000), "image-too-large"),
        (lambda: _png_header_only(100, 100)[:40], "unreadable-image"),
        (lambda: _pdf(300), "too-many-pages"),
        (lambda: _pdf(1, text="secret", encrypt="motdepasse"), "encrypted-pdf"),
        (lambda: b"%PDF-1.4 broken", "unreadable-pdf"),
        (lambda: b"", "empty-file"),
    ],
    ids=["text", "zip", "bomb", "truncated", "300-pages", "encrypted", "broken-pdf", "empty"],
)
def test_bad_files_are_refused_with_a_french_reason(make: Callable[[], bytes], code: str) -> None:
    with pytest.raises(DocumentError) as caught:
        read_document(make())
    assert caught.value.code == code
    assert caught.value.message
    assert caught.value.status in {413, 422}


# --------------------------------------------------------------------------- CLI contract


def test_extract_contract_json_lines(catalog: None, scan: Any, tmp_path: Path) -> None:
    good = tmp_path / "scan.png"
    good.write_bytes(scan.png())
    bad = tmp_path / "notes.txt"
    bad.write_text("pas une ordonnance")
    result = CliRunner().invoke(main, ["prescriptions", "extract", str(good), str(bad)])
    assert result.exit_code == 6, result.output
    assert "notes.txt : format non reconnu" in result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    body = json.loads(lines[0])
    assert set(body) == CONTRACT_KEYS
    assert body["source"] == str(good)
    assert body["pages"] == 1
    assert body["ocr_ms"] > 0
    assert body["prescriber"] == {"name": scan.prescriber, "rpps": scan.rpps}
    assert body["date"] == scan.prescribed_on.isoformat()
    assert body["patient"] == {"name": scan.patient}
    assert [line["cis"] for line in body["lines"]] == [DOLIPRANE[0], AMLODIPINE[0]]
    for line, truth in zip(body["lines"], scan.lines, strict=True):
        assert set(line) == LINE_KEYS
        assert set(line["posology"]) == POSOLOGY_KEYS
        assert 0 < line["confidence"] <= 1
        expected = truth.posology
        found = line["posology"]
        assert (found["dose"], found["unit"], found["per_day"]) == (
            expected.dose,
            expected.unit,
            expected.per_day,
        )
        assert found["duration_days"] == expected.duration_days
        assert found["as_needed"] == expected.as_needed
    assert body["lines"][0]["atc"] == "N02BE01"
    assert body["lines"][0]["strength"] == "1000 mg"

    alone = CliRunner().invoke(main, ["prescriptions", "extract", str(bad)])
    assert alone.exit_code == 2
    assert alone.stdout == ""


# --------------------------------------------------------------------------- API


def _headers(token_for: Callable[..., str], *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(*scopes)}"}


def test_upload_review_and_validate(
    catalog: None,
    client: Any,
    token_for: Callable[..., str],
    platform: Platform,
    scan: Any,
) -> None:
    importer = _headers(token_for, "prescriptions:import", "patients:write", "patients:read")
    reader = _headers(token_for, "patients:read")
    files = {"file": ("ordonnance.png", scan.png(), "image/png")}
    assert client.post("/api/v1/imports", files=files, headers=reader).status_code == 403

    created = client.post("/api/v1/imports", files=files, headers=importer)
    assert created.status_code == 201, created.text
    draft = created.json()
    draft_id = draft["id"]
    content = draft["content"]
    assert draft["status"] == "draft"
    assert draft["version"] == 1
    assert draft["pages"] == 1
    assert [line["cis"] for line in content["lines"]] == [DOLIPRANE[0], AMLODIPINE[0]]
    assert content["prescriber_rpps"] == {"value": scan.rpps, "confidence": 1.0}
    first_box, second_box = (line["box"] for line in content["lines"])
    assert [line["page"] for line in content["lines"]] == [1, 1]
    assert 0 <= first_box[0] < first_box[2] <= 1
    assert first_box[3] <= second_box[1]  # the first line is above the second
    assert 0 < content["prescriber_name"]["confidence"] <= 1
    assert content["patient_name"]["value"] == scan.patient
    # Nothing is a prescription yet.
    assert platform.store.db.execute("SELECT count(*) FROM prescription_index").fetchone()[0] == 0

    page = client.get(draft["page_urls"][0], headers=importer)
    assert page.status_code == 200
    assert page.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(page.content)).width <= 1400
    assert client.get(f"/api/v1/imports/{draft_id}/pages/2", headers=importer).status_code == 404
    listed = client.get("/api/v1/imports", headers=importer).json()
    assert [item["id"] for item in listed] == [draft_id]

    incomplete = client.post(
        f"/api/v1/imports/{draft_id}/validate", json={"expected_version": 1}, headers=importer
    )
    assert incomplete.status_code == 422
    assert {e["key"] for e in incomplete.json()["errors"]} == {"patient_id"}

    patient = client.post(
        "/api/v1/patients",
        json={
            "identity": {
                "birth_family_name": "DURAND",
                "given_names": "Paul",
                "birth_date": "1950-03-02",
                "sex": "M",
            }
        },
        headers=importer,
    )
    assert patient.status_code == 201, patient.text
    patched = client.patch(
        f"/api/v1/imports/{draft_id}",
        json={"expected_version": 1, "patient_id": patient.json()["id"]},
        headers=importer,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] == 2
    stale = client.patch(
        f"/api/v1/imports/{draft_id}",
        json={"expected_version": 1, "renewals": 1},
        headers=importer,
    )
    assert stale.status_code == 409

    fixed = patched.json()["content"]
    fixed["lines"][1].update(dose=2, unit="gélule")
    replaced = client.put(
        f"/api/v1/imports/{draft_id}",
        json={"expected_version": 2, "content": fixed},
        headers=importer,
    )
    assert replaced.status_code == 200, replaced.text
    assert (
        client.post(
            f"/api/v1/imports/{draft_id}/validate",
            json={"expected_version": 3},
            headers=_headers(token_for, "prescriptions:import"),
        ).status_code
        == 403
    )  # creating the prescription also needs patients:write

    validated = client.post(
        f"/api/v1/imports/{draft_id}/validate", json={"expected_version": 3}, headers=importer
    )
    assert validated.status_code == 201, validated.text
    rx_id = validated.json()["prescription_id"]
    prescription = client.get(f"/api/v1/prescriptions/{rx_id}", headers=importer).json()
    assert [line["cis"] for line in prescription["lines"]] == [DOLIPRANE[0], AMLODIPINE[0]]
    assert prescription["lines"][1]["posology"]["dose"] == 2
    assert prescription["prescriber"]["rpps"] == scan.rpps
    assert prescription["prescribed_on"] == scan.prescribed_on.isoformat()

    again = client.post(
        f"/api/v1/imports/{draft_id}/validate", json={"expected_version": 4}, headers=importer
    )
    assert again.status_code == 409
    closed = client.put(
        f"/api/v1/imports/{draft_id}",
        json={"expected_version": 4, "content": fixed},
        headers=importer,
    )
    assert closed.status_code == 409
    history = client.get(f"/api/v1/imports/{draft_id}/history", headers=importer).json()
    assert [(v["version"], v["status"]) for v in history] == [
        (1, "draft"),
        (2, "draft"),
        (3, "draft"),
        (4, "validated"),
    ]
    actions = {
        (e.action, e.outcome)
        for e in platform.audit.entries()
        if e.object_type == "prescription_import" and e.object_id == draft_id
    }
    assert {("import", "success"), ("read_page", "success"), ("validate", "success")} <= actions


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: b"GIF89a not supported", 422, "unsupported-format"),
        (lambda: _png_header_only(30_000, 30_000), 413, "image-too-large"),
        (lambda: _pdf(300), 413, "too-many-pages"),
        (lambda: _pdf(1, text="x", encrypt="secret"), 422, "encrypted-pdf"),
    ],
    ids=["not-an-image", "bomb", "300-pages", "encrypted"],
)
def test_upload_of_bad_files_is_a_problem(
    client: Any,
    token_for: Callable[..., str],
    make: Callable[[], bytes],
    status: int,
    code: str,
) -> None:
    response = client.post(
        "/api/v1/imports",
        files={"file": ("x.bin", make(), "application/octet-stream")},
        headers=_headers(token_for, "prescriptions:import"),
    )
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["type"].endswith(code)
    assert problem["detail"]


def test_csv_export_becomes_drafts(
    catalog: None, client: Any, token_for: Callable[..., str]
) -> None:
    csv_text = (
        "num_ordonnance;date;medecin;rpps;patient;libelle;cip13;posologie\n"
        "A1;12/03/2025;Dr MARTIN;10000000009;DUPONT Jeanne;DOLIPRANE 1000 mg cp;;"
        "1 cp matin et soir pdt 7j\n"
        "A1;12/03/2025;Dr MARTIN;10000000009;DUPONT Jeanne;AMLODIPINE BIOGARAN 5 mg gélule;;"
        "1 gélule le matin\n"
        "B2;13/03/2025;Dr PETIT;;DURAND Paul;Zorglub 10 mg;;1 cp le soir\n"
    )
    headers = _headers(token_for, "prescriptions:import")
    response = client.post(
        "/api/v1/imports/csv",
        files={"file": ("export.csv", csv_text.encode(), "text/csv")},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    result = response.json()
    assert len(result["drafts"]) == 2
    assert result["rows"] == 3
    first = client.get(f"/api/v1/imports/{result['drafts'][0]}", headers=headers).json()
    assert first["source"] == "csv"
    assert [line["cis"] for line in first["content"]["lines"]] == [DOLIPRANE[0], AMLODIPINE[0]]
    assert first["content"]["lines"][0]["times"] == ["morning", "evening"]
    second = client.get(f"/api/v1/imports/{result['drafts'][1]}", headers=headers).json()
    assert second["content"]["lines"][0]["cis"] is None  # unknown product: not guessed
    rejected = client.post(
        f"/api/v1/imports/{result['drafts'][1]}/reject",
        json={"expected_version": 1},
        headers=headers,
    )
    assert rejected.status_code == 201, rejected.text
    assert rejected.json()["status"] == "rejected"
    listed = client.get("/api/v1/imports?status=rejected", headers=headers).json()
    assert [item["id"] for item in listed] == [result["drafts"][1]]
    assert (
        client.post(
            f"/api/v1/imports/{result['drafts'][1]}/reject",
            json={"expected_version": 2},
            headers=headers,
        ).status_code
        == 409
    )
    bad = client.post(
        "/api/v1/imports/csv",
        files={"file": ("x.csv", b"a;b\n1;2\n", "text/csv")},
        headers=headers,
    )
    assert bad.status_code == 422
    assert "colonnes" in bad.json()["detail"]


def test_watched_folder_imports_each_file_once(
    catalog: None, platform: Platform, tmp_path: Path
) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "export.csv").write_text(
        "ordonnance;produit;posologie\nA;DOLIPRANE 1000 mg;1 cp le soir\n"
    )
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "bundle.json").write_text("{}")
    seen: list[bytes] = []

    def fhir(data: bytes) -> str:
        seen.append(data)
        raise ValueError("lot FHIR refusé : pas un Bundle")

    outcomes = {
        o.filename: o.outcome
        for o in process_folder(platform.store, folder, actor="t", fhir_import=fhir)
    }
    assert outcomes["export.csv"] == "csv:1 drafts"
    assert outcomes["broken.png"].startswith("error:image illisible")
    assert outcomes["bundle.json"].startswith("error:lot FHIR refusé")
    assert seen == [b"{}"]
    assert process_folder(platform.store, folder, actor="t", fhir_import=fhir) == []
    drafts = repository.listing(platform.store, "draft", 10, 0)
    assert [d.entity.source for d in drafts] == ["csv"]


def test_import_document_keeps_page_images(platform: Platform, scan: Any) -> None:
    saved = import_document(platform.store, scan.png(), "scan.png", actor="t")
    png = repository.page(platform.store, saved.entity_id, 1)
    assert png is not None
    assert png.startswith(b"\x89PNG")
    # Without a catalog nothing is matched, nothing invented.
    assert all(line.cis is None for line in saved.entity.content.lines)


def test_worker_scan_sends_fhir_bundles_to_the_fhir_service(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.config import load_settings
    from appliance.platform import open_platform
    from services.document_import import scan_import_folder

    folder = tmp_path / "depot"
    folder.mkdir()
    monkeypatch.setenv("HYGIE_IMPORT_FOLDER", str(folder))
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"use": "official", "family": "DUPRÉ", "given": ["Hélène"]}],
                    "gender": "female",
                    "birthDate": "1962-08-15",
                }
            }
        ],
    }
    (folder / "lot.json").write_text(json.dumps(bundle))
    (folder / "ignored.docx").write_bytes(b"not for us")
    platform = open_platform(load_settings())
    try:
        assert scan_import_folder(platform) == 1
        row = platform.store.db.execute(
            "SELECT filename, outcome FROM import_folder_seen"
        ).fetchone()
        assert row[0] == "lot.json"
        assert row[1] == "fhir:collection, 0 rejected"
        assert scan_import_folder(platform) == 0  # each file once
        audited = [
            (e.actor, e.action, e.outcome)
            for e in platform.audit.entries()
            if e.object_type == "prescription_import"
        ]
        assert audited == [("system:import-folder", "import", "fhir")]
    finally:
        platform.close()


def test_worker_registers_the_folder_scan(platform: Platform, tmp_path: Path) -> None:
    from huey import MemoryHuey

    from services.document_import import register_tasks

    huey = MemoryHuey(immediate=True)
    register_tasks(huey, platform)
    periodic = huey._registry._periodic_tasks
    assert [task.__name__ for task in periodic] == ["import_folder_scan"]
    task = periodic[0]()
    task.execute()  # no folder configured: a no-op, not an error
    assert platform.settings.import_folder is None
