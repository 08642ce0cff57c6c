"""Documents: wording (pure), the three formats saying the same thing, PAdES signatures
checked by pyhanko's validator against a test CA, and the API/CLI end to end on a real
appliance (encrypted store, audit log, outbox)."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pdfplumber
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from docx import Document
from litestar.testing import TestClient
from PIL import Image

from appliance.cli import main
from appliance.config import load_settings
from appliance.platform import Platform
from appliance.tasks import record_heartbeat
from services.documents import logic, render, signing
from services.documents.models import (
    AnswerBox,
    DocumentModel,
    Heading,
    Paragraph,
    PatientInfo,
    Pharmacy,
    Table,
)
from services.llm import store as llm_store
from services.llm.models import Draft, GenerationRecord

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bdpm-mini"
VIGNETTES = Path(__file__).resolve().parent / "fixtures" / "vignettes"
DOLIPRANE_CIP13 = "3400935955838"
RPPS = "10000000009"
TODAY = date.today()
PASSPHRASE = b"mot-de-passe-test"
PHARMACY = Pharmacy(
    name="Pharmacie du Centre",
    address_lines=("1 rue de la Paix", "75001 Paris"),
    finess="750000001",
    phone="01 23 45 67 89",
)
PATIENT = PatientInfo(
    family_name="DUPONT",
    given_names="Jeanne",
    birth_date=date(1940, 3, 2),
    sex="F",
    gp_name="Dr Martin",
    gp_rpps=RPPS,
)


# --------------------------------------------------------------------------- a test PKI


class Pki:
    def __init__(self, tmp: Path, name: str = "AC de test Hygie") -> None:
        now = datetime.now(UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                x509.NameAttribute(NameOID.COMMON_NAME, "Pharmacien de test"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        tmp.mkdir(parents=True, exist_ok=True)
        self.ca_pem = tmp / "ca.pem"
        self.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.p12 = tmp / "pharmacien.p12"
        self.p12.write_bytes(
            pkcs12.serialize_key_and_certificates(
                b"pharmacien", key, cert, [ca], serialization.BestAvailableEncryption(PASSPHRASE)
            )
        )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=not cert_sign,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


# --------------------------------------------------------------------------- pure wording


def test_plan_de_prise_columns_never_guess_a_time() -> None:
    clear = logic.treatment_row(
        product="DOLIPRANE 1000 mg",
        dci="PARACÉTAMOL",
        dose=1,
        unit="comprimé",
        times_per_day=2,
        times_of_day=("morning", "evening"),
        as_needed=False,
        duration=None,
        original_text=None,
        since=date(2024, 1, 1),
    )
    assert (clear.morning, clear.noon, clear.evening, clear.bedtime) == (
        "1 comprimé",
        "",
        "1 comprimé",
        "",
    )
    assert clear.posology == "1 comprimé, matin, soir"
    assert not clear.times_unknown
    vague = logic.treatment_row(
        product="X",
        dci="",
        dose=0.5,
        unit="comprimé",
        times_per_day=2,
        times_of_day=(),
        as_needed=False,
        duration="7 jours",
        original_text=None,
        since=None,
    )
    assert vague.times_unknown
    assert (vague.morning, vague.noon, vague.evening, vague.bedtime) == ("", "", "", "")
    assert vague.posology == "0,5 comprimé, 2 fois par jour, pendant 7 jours"
    plan = logic.plan_de_prise(PHARMACY, PATIENT, [clear, vague], today=TODAY)
    texts = [b.text for b in plan.blocks if isinstance(b, Paragraph)]
    assert any(logic.NO_TIME in t and t.startswith("X :") for t in texts)
    table = next(b for b in plan.blocks if isinstance(b, Table))
    assert table.large
    assert table.columns[1:5] == ("Matin", "Midi", "Soir", "Coucher")


def test_findings_grouped_by_priority_with_sources_and_answer_boxes() -> None:
    interaction = logic.finding_item(
        "interaction",
        "ANSM 2023-09: A + B",
        "avoid",
        "Association déconseillée.",
        "Parlez-en à votre médecin.",
        "Envisager l'arrêt de B.",
        {"thesaurus": {"edition": "2023-09", "pages": [12, 13]}},
        {},
    )
    stopp = logic.finding_item(
        "stopp",
        "STOPP B1",
        "consider",
        "Critère STOPP.",
        "Conseil patient.",
        "",
        {"source": "STOPP/START v3 (2023)"},
        {},
    )
    assert interaction.sources == ("Thésaurus des interactions ANSM, édition 2023-09, p. 12, 13",)
    assert stopp.recommendation_gp == "Conseil patient."
    model = logic.synthesis(
        PHARMACY,
        PATIENT,
        [],
        [stopp, interaction],
        [("STOPP C3", ["DFG"])],
        synthesis_text=logic.engine_synthesis([stopp, interaction]),
        synthesis_from_llm=False,
        pharmacist="Ph. Test",
        today=TODAY,
    )
    headings = [b.text for b in model.blocks if isinstance(b, Heading)]
    assert headings.index(logic.PRIORITY_TITLES[1]) < headings.index(logic.PRIORITY_TITLES[3])
    paragraphs = [b.text for b in model.blocks if isinstance(b, Paragraph)]
    # proposals follow priority order, each with room for the GP's answer
    assert paragraphs.index(
        "Proposition 1 (ANSM 2023-09: A + B) : Envisager l'arrêt de B."
    ) < paragraphs.index("Proposition 2 (STOPP B1) : Conseil patient.")
    assert sum(isinstance(b, AnswerBox) for b in model.blocks) == 2
    assert "Source : STOPP/START v3 (2023)" in paragraphs
    assert "STOPP C3 : DFG" in paragraphs
    assert "FINESS 750000001" in paragraphs


def test_csv_is_excel_friendly_and_defuses_formulas() -> None:
    data = logic.to_csv(("a", "b"), [("=SUM(A1)", date(2024, 1, 2)), ("Dupont; Jean", None)])
    assert data.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))
    assert rows == [["a", "b"], ["'=SUM(A1)", "2024-01-02"], ["Dupont; Jean", ""]]
    only_first = logic.to_csv(("a", "b"), [("@x", "+33 1"), ("y", "-1")], text_columns=(0,))
    parsed = list(csv.reader(io.StringIO(only_first.decode("utf-8-sig")), delimiter=";"))
    assert parsed[1:] == [["'@x", "+33 1"], ["y", "-1"]]


# --------------------------------------------------------------------------- three formats


def _rich_model() -> DocumentModel:
    return DocumentModel(
        kind="synthesis",
        template_version="synthesis/1",
        title="Synthèse de l'analyse des traitements",
        pharmacy=PHARMACY,
        blocks=(
            Paragraph(text="Pharmacie du Centre", style="small"),
            Heading(text="Traitements en cours"),
            Table(
                columns=("Médicament", "DCI", "Dose", "Posologie", "Depuis le"),
                rows=(
                    ("DOLIPRANE 1000 mg", "PARACÉTAMOL", "1 comprimé", "matin, soir", "01/01/2024"),
                    ("KARDEGIC 75 mg", "ACIDE ACÉTYLSALICYLIQUE", "1 sachet", "midi", ""),
                ),
                widths=(2.8, 3.2, 1.6, 2.8, 1.8),
            ),
            Heading(text="Priorité 1 — à traiter rapidement", level=3),
            Paragraph(text="Texte <b>non interprété</b> & « guillemets » : 0,5 mg/kg ≥ 2"),
            Paragraph(text="Proposition 1 : réduire la dose."),
            AnswerBox(label="Réponse du médecin à la proposition 1"),
        ),
        footer="Pharmacie du Centre — modèle synthesis/1",
        created_on=TODAY,
    )


def _words(text: str, footer: str) -> Counter[str]:
    return Counter(text.replace(footer, " ").split())


def _chars(words: Counter[str]) -> Counter[str]:
    """The characters of the words: equal even where a PDF cell had to break a long word."""
    return Counter("".join(words.elements()))


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("head", "style", "title"):
            self.skip += 1
        if tag in ("p", "td", "th", "h1", "h2", "h3", "div", "footer", "tr"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("head", "style", "title"):
            self.skip -= 1
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def pdf_text(data: bytes) -> str:
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        return "\n".join(page.extract_text() or "" for page in pdf.pages)


def docx_text(data: bytes) -> str:
    document = Document(io.BytesIO(data))
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.extend(cell.text for cell in row.cells)
    parts.extend(p.text for p in document.sections[0].footer.paragraphs)
    return "\n".join(parts)


def html_text(data: bytes) -> str:
    parser = _HtmlText()
    parser.feed(data.decode())
    return "".join(parser.parts)


def test_pdf_docx_and_html_say_the_same_words() -> None:
    model = _rich_model()
    pdf, docx, html = (render.render(model, fmt) for fmt in ("pdf", "docx", "html"))
    texts = {"pdf": pdf_text(pdf), "docx": docx_text(docx), "html": html_text(html)}
    for fmt, text in texts.items():
        assert model.footer in text, fmt
    words = {fmt: _words(text, model.footer) for fmt, text in texts.items()}
    assert words["pdf"] == words["html"]  # the layout breaks no word here
    assert words["docx"] == words["html"]
    assert "<b>non" in words["html"]  # shown as text, never interpreted as markup
    assert "<b>" not in html.decode().split("<main>")[1].replace("&lt;b&gt;", "")
    # PDF: fonts embedded (DejaVu subset, no base-14 font), PDF/A-2b identification
    assert b"/FontFile2" in pdf
    assert b"/BaseFont /Helvetica" not in pdf
    assert b"<pdfaid:part>2</pdfaid:part>" in pdf
    assert b"/OutputIntents" in pdf
    with pdfplumber.open(io.BytesIO(pdf)) as opened:
        info = opened.metadata
    xmp = pdf[pdf.index(b"<x:xmpmeta") : pdf.index(b"</x:xmpmeta>")].decode()
    for value in (info["Title"], info["Producer"], info["Creator"], info["Subject"]):
        assert escape(value) in xmp  # PDF/A: the XMP says what /Info says
    stamp = datetime.strptime(info["CreationDate"][2:16], "%Y%m%d%H%M%S")
    offset = info["CreationDate"][16:].replace("'", "")
    when = datetime.strptime(stamp.strftime("%Y%m%d%H%M%S") + offset, "%Y%m%d%H%M%S%z")
    assert f"<xmp:CreateDate>{when.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}<" in xmp


# --------------------------------------------------------------------------- signatures


def _pdf() -> bytes:
    return render.render(_rich_model(), "pdf")


def test_pades_signature_validates_and_detects_changes(pki: Pki, tmp_path: Path) -> None:
    signer = signing.Pkcs12Signer(pki.p12, PASSPHRASE)
    signed, subject = signing.sign_pdf(_pdf(), signer, reason="BPM", location="Paris")
    assert "Pharmacien de test" in subject
    roots = signing.load_trust_roots(pki.ca_pem)
    ok = signing.verify_pdf(signed, roots)
    assert (ok.intact, ok.valid, ok.trusted) == (True, True, True)
    assert ok.coverage == "entire_file"
    # a byte changed inside the signed range
    tampered = bytearray(signed)
    at = signed.index(b"DejaVuSans")
    tampered[at] ^= 0x20
    bad = signing.verify_pdf(bytes(tampered), roots)
    assert not bad.intact
    assert not bad.valid
    assert bad.summary == "le document a été modifié après la signature"
    # bytes appended after the signature are not covered by it
    appended = signing.verify_pdf(signed + b"\n% ajout\n", roots)
    assert not appended.intact
    # another CA does not vouch for this pharmacist
    other = Pki(tmp_path / "other", name="Autre AC")
    stranger = signing.verify_pdf(signed, signing.load_trust_roots(other.ca_pem))
    assert stranger.intact
    assert not stranger.trusted
    unsigned = signing.verify_pdf(_pdf(), roots)
    assert unsigned.summary == "le document ne porte aucune signature"


def test_signers_refuse_clearly(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(signing.SigningError, match="mot de passe"):
        signing.sign_pdf(_pdf(), signing.Pkcs12Signer(pki.p12, b"faux"), reason="r", location=None)
    missing = signing.Pkcs11Signer(tmp_path / "libabsente.so", pin="1234")
    with pytest.raises(signing.SigningError, match="module PKCS#11 introuvable"):
        signing.sign_pdf(_pdf(), missing, reason="r", location=None)


# --------------------------------------------------------------------------- API end to end


@pytest.fixture
def appliance(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, pki: Pki, tmp_path: Path
) -> Iterator[tuple[TestClient[Any], Platform]]:
    from appliance.app import create_app

    result = CliRunner().invoke(main, ["catalog", "import", str(FIXTURE)])
    assert result.exit_code == 0, result.output
    (Path(env["HYGIE_KEY_DIR"]) / "documents-signing-passphrase").write_bytes(PASSPHRASE)
    logo = tmp_path / "logo.png"
    Image.new("RGB", (120, 60), (0, 128, 64)).save(logo)
    for key, value in {
        "HYGIE_PHARMACY_NAME": "Pharmacie du Centre",
        "HYGIE_PHARMACY_ADDRESS": "1 rue de la Paix|75001 Paris",
        "HYGIE_PHARMACY_FINESS": "750000001",
        "HYGIE_DOCUMENTS_SIGNING_PKCS12": str(pki.p12),
        "HYGIE_DOCUMENTS_TRUST_ROOTS": str(pki.ca_pem),
        "HYGIE_PHARMACY_LOGO": str(logo),
    }.items():
        monkeypatch.setenv(key, value)
    app = create_app(load_settings())
    with TestClient(app=app) as client:
        record_heartbeat(app.state.platform.store, "test-worker")
        yield client, app.state.platform


def _setup_patient(client: TestClient[Any], headers: dict[str, str]) -> tuple[str, str]:
    patient = {
        "identity": {
            "birth_family_name": "DUPONT",
            "given_names": "Jeanne",
            "birth_date": "1940-03-02",
            "sex": "F",
        },
        "gp": {"name": "Dr Martin", "rpps": RPPS},
        "consents": [
            {"kind": "bpm_adhesion", "status": "granted", "decided_on": TODAY.isoformat()}
        ],
    }
    created = client.post("/api/v1/patients", json=patient, headers=headers)
    assert created.status_code == 201, created.text
    pid = str(created.json()["id"])
    prescription = {
        "patient_id": pid,
        "prescriber": {"name": "Dr Martin", "rpps": RPPS},
        "prescribed_on": (TODAY - timedelta(days=5)).isoformat(),
        "lines": [
            {
                "cip13": DOLIPRANE_CIP13,
                "posology": {
                    "dose": 1,
                    "unit": "comprimé",
                    "times_per_day": 2,
                    "times_of_day": ["morning", "evening"],
                    "duration": {"value": 1, "unit": "month"},
                },
            },
        ],
    }
    rx = client.post("/api/v1/prescriptions", json=prescription, headers=headers)
    assert rx.status_code == 201, rx.text
    opened = client.post(
        "/api/v1/bpm", json={"patient_id": pid, "opened_on": TODAY.isoformat()}, headers=headers
    )
    assert opened.status_code == 201, opened.text
    cid = str(opened.json()["id"])
    version = 1
    for kind in ("adhesion", "recueil"):
        step = {
            "expected_version": version,
            "kind": kind,
            "performed_on": TODAY.isoformat(),
            "notes": f"Entretien {kind} : patiente très observante",
        }
        response = client.post(f"/api/v1/bpm/{cid}/steps", json=step, headers=headers)
        assert response.status_code == 200, response.text
        version = response.json()["version"]
    return pid, cid


def _generation(patient_id: str, *, valid: bool) -> GenerationRecord:
    return GenerationRecord(
        id=f"gen-{uuid.uuid4().hex}",
        task="bpm_synthesis",
        patient_id=patient_id,
        strategy="single",
        template_version="bpm_synthesis/v1",
        params={},
        input_sha256="0" * 64,
        output_sha256="1" * 64,
        valid=valid,
        draft=Draft(texte="Synthèse rédigée pour le test.") if valid else None,
        attempts=[],
    )


def test_generate_sign_verify_export_over_http(
    appliance: tuple[TestClient[Any], Platform], token_for: Callable[..., str]
) -> None:
    client, platform = appliance
    headers = {"Authorization": f"Bearer {token_for()}"}
    pid, cid = _setup_patient(client, headers)

    views = {}
    for fmt in ("pdf", "docx", "html"):
        response = client.post(
            "/api/v1/documents",
            json={"kind": "synthesis", "patient_id": pid, "format": fmt},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        views[fmt] = response.json()
    assert views["pdf"]["template_version"] == "synthesis/1"
    assert views["pdf"]["synthesis_source"] == "engine"
    contents = {}
    for fmt, view in views.items():
        got = client.get(f"/api/v1/documents/{view['id']}/content", headers=headers)
        assert got.status_code == 200
        assert got.headers["x-content-sha256"] == view["sha256"]
        contents[fmt] = got.content
    pdf = pdf_text(contents["pdf"])
    for expected in ("DUPONT Jeanne", "Médecin traitant : Dr Martin", "DOLIPRANE", "FINESS"):
        assert expected in pdf
    footer_pattern = re.compile(r"Pharmacie du Centre — document du \S+ — modèle synthesis/1")
    words = {
        "pdf": Counter(footer_pattern.sub(" ", pdf).split()),
        "docx": Counter(footer_pattern.sub(" ", docx_text(contents["docx"])).split()),
        "html": Counter(footer_pattern.sub(" ", html_text(contents["html"])).split()),
    }
    assert words["docx"] == words["html"]
    assert _chars(words["pdf"]) == _chars(words["html"])

    # the logo from configuration is in every format
    with pdfplumber.open(io.BytesIO(contents["pdf"])) as opened:
        assert opened.pages[0].images
    assert Document(io.BytesIO(contents["docx"])).inline_shapes
    assert b'src="data:image/png;base64,' in contents["html"]

    # a validated LLM draft of this patient replaces the engine's wording, and says so
    generation = _generation(pid, valid=True)
    llm_store.save(platform.store, generation, actor="user-test")
    drafted = client.post(
        "/api/v1/documents",
        json={"kind": "synthesis", "patient_id": pid, "generation_id": generation.id},
        headers=headers,
    )
    assert drafted.status_code == 201, drafted.text
    assert drafted.json()["synthesis_source"] == generation.id
    text = pdf_text(
        client.get(f"/api/v1/documents/{drafted.json()['id']}/content", headers=headers).content
    )
    assert "Synthèse rédigée pour le test" in text
    assert "modèle de langage local" in text
    rejected = _generation(pid, valid=False)
    llm_store.save(platform.store, rejected, actor="user-test")
    refused = client.post(
        "/api/v1/documents",
        json={"kind": "synthesis", "patient_id": pid, "generation_id": rejected.id},
        headers=headers,
    )
    assert refused.status_code == 409
    written = client.post(
        "/api/v1/documents",
        json={
            "kind": "synthesis",
            "patient_id": pid,
            "synthesis_text": "Texte relu du pharmacien.",
        },
        headers=headers,
    )
    assert written.status_code == 201, written.text
    assert written.json()["synthesis_source"] == "pharmacist"
    both = client.post(
        "/api/v1/documents",
        json={
            "kind": "synthesis",
            "patient_id": pid,
            "synthesis_text": "Texte",
            "generation_id": generation.id,
        },
        headers=headers,
    )
    assert both.status_code == 400
    other = _generation("autre-patient", valid=True)
    llm_store.save(platform.store, other, actor="user-test")
    mismatch = client.post(
        "/api/v1/documents",
        json={"kind": "synthesis", "patient_id": pid, "generation_id": other.id},
        headers=headers,
    )
    assert mismatch.status_code == 400

    # other kinds
    plan = client.post(
        "/api/v1/documents",
        json={"kind": "plan_de_prise", "patient_id": pid, "format": "pdf"},
        headers=headers,
    )
    assert plan.status_code == 201, plan.text
    report = client.post(
        "/api/v1/documents",
        json={
            "kind": "compte_rendu",
            "patient_id": pid,
            "cycle_id": cid,
            "step_index": 1,
            "format": "html",
        },
        headers=headers,
    )
    assert report.status_code == 201, report.text
    html = client.get(f"/api/v1/documents/{report.json()['id']}/content", headers=headers).text
    assert "Entretien recueil : patiente très observante" in html
    no_conseil = client.post(
        "/api/v1/documents",
        json={"kind": "fiche_conseil", "patient_id": pid, "cycle_id": cid},
        headers=headers,
    )
    assert no_conseil.status_code == 409
    assert no_conseil.json()["type"].endswith("step-not-done")
    bpm_headers = {"Authorization": f"Bearer {token_for('bpm:read', 'bpm:write')}"}
    version = client.get(f"/api/v1/bpm/{cid}", headers=bpm_headers).json()["version"]
    for kind in ("analyse", "transmission", "conseil"):
        step = {
            "expected_version": version,
            "kind": kind,
            "performed_on": TODAY.isoformat(),
            "notes": f"Étape {kind} : conseils sur le paracétamol",
        }
        done = client.post(f"/api/v1/bpm/{cid}/steps", json=step, headers=bpm_headers)
        assert done.status_code == 200, done.text
        version = done.json()["version"]
    fiche = client.post(
        "/api/v1/documents",
        json={"kind": "fiche_conseil", "patient_id": pid, "cycle_id": cid, "format": "docx"},
        headers=headers,
    )
    assert fiche.status_code == 201, fiche.text
    fiche_text = docx_text(
        client.get(f"/api/v1/documents/{fiche.json()['id']}/content", headers=headers).content
    )
    assert "Fiche conseil" in fiche_text
    assert "Étape conseil : conseils sur le paracétamol" in fiche_text
    assert "DOLIPRANE" in fiche_text

    # sign, verify, immutability, audit and outbox
    signed = client.post(
        f"/api/v1/documents/{views['pdf']['id']}/signature", json={}, headers=headers
    )
    assert signed.status_code == 201, signed.text
    copy = signed.json()
    assert copy["signed_from"] == views["pdf"]["id"]
    assert "Pharmacien de test" in copy["signer"]
    verified = client.get(f"/api/v1/documents/{copy['id']}/verification", headers=headers)
    assert verified.status_code == 200
    assert verified.json()["intact"]
    assert verified.json()["trusted"]
    again = client.post(
        f"/api/v1/documents/{views['pdf']['id']}/signature", json={}, headers=headers
    )
    assert again.status_code == 409
    not_pdf = client.post(
        f"/api/v1/documents/{views['docx']['id']}/signature", json={}, headers=headers
    )
    assert not_pdf.status_code == 409
    with pytest.raises(Exception, match="immutable"), platform.store.write() as db:
        db.execute("UPDATE documents SET sha256 = ? WHERE id = ?", ["0" * 64, copy["id"]])
    with pytest.raises(Exception, match="immutable"), platform.store.write() as db:
        db.execute("DELETE FROM documents WHERE id = ?", [copy["id"]])
    entries = [(e.action, e.object_id) for e in platform.audit.entries()]
    assert ("sign", f"{copy['id']}:{copy['sha256']}") in entries
    assert ("generate", f"{views['pdf']['id']}:{views['pdf']['sha256']}") in entries
    assert ("download", f"{views['pdf']['id']}:{views['pdf']['sha256']}") in entries
    outbox = platform.store.db.execute(
        "SELECT stream, kind, payload FROM sync_outbox WHERE stream = 'documents'"
    ).fetchall()
    assert len(outbox) == 1
    assert copy["sha256"] in outbox[0][2]
    assert "DUPONT" not in outbox[0][2]

    listed = client.get("/api/v1/documents", params={"patient_id": pid}, headers=headers)
    assert listed.status_code == 200
    assert {d["id"] for d in listed.json()} >= {copy["id"], views["html"]["id"]}

    status_csv = client.get("/api/v1/documents/exports/bpm-status.csv", headers=headers)
    assert status_csv.status_code == 200
    rows = list(csv.reader(io.StringIO(status_csv.content.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == list(logic.BPM_STATUS_COLUMNS)
    assert rows[1][:2] == [pid, "DUPONT"]
    assert rows[1][7:10] == ["conseil", TODAY.isoformat(), "observance"]
    vignette = json.loads((VIGNETTES / "dose-doac-rivaroxaban.json").read_text())["bundle"]
    analysis = client.post("/api/v1/analyses", json=vignette, headers=headers)
    assert analysis.status_code == 201, analysis.text
    stored = analysis.json()
    findings_csv = client.get("/api/v1/documents/exports/findings.csv", headers=headers)
    assert findings_csv.status_code == 200
    found = list(csv.reader(io.StringIO(findings_csv.content.decode("utf-8-sig")), delimiter=";"))
    assert found[0] == list(logic.FINDINGS_COLUMNS)
    assert [r[4] for r in found[1:] if r[0] == stored["id"]] == [
        f["rule"] for f in stored["findings"]
    ]
    elsewhere = client.post(
        "/api/v1/documents",
        json={"kind": "synthesis", "patient_id": pid, "analysis_id": stored["id"]},
        headers=headers,
    )
    assert elsewhere.status_code == 400  # that analysis is another patient's record
    assert elsewhere.json()["type"].endswith("analysis-of-another-patient")


def test_bad_requests_get_problem_details(
    appliance: tuple[TestClient[Any], Platform], token_for: Callable[..., str]
) -> None:
    client, _ = appliance
    headers = {"Authorization": f"Bearer {token_for()}"}
    unknown = "00000000-0000-4000-8000-000000000000"
    cases = [
        ({"kind": "synthesis", "patient_id": unknown}, 404),
        ({"kind": "synthesis", "patient_id": "not-a-uuid"}, 400),
        ({"kind": "letter", "patient_id": unknown}, 400),
        ({"kind": "synthesis", "patient_id": unknown, "format": "odt"}, 400),
        ({"kind": "compte_rendu", "patient_id": unknown}, 404),
        ({"kind": "synthesis", "patient_id": unknown, "synthesis_text": ""}, 400),
        ({"kind": "synthesis", "patient_id": unknown, "surprise": 1}, 400),
    ]
    for body, status in cases:
        response = client.post("/api/v1/documents", json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    missing = "doc-" + "0" * 20
    assert client.get(f"/api/v1/documents/{missing}", headers=headers).status_code == 404
    assert client.get("/api/v1/documents/doc-x/content", headers=headers).status_code == 400
    assert client.get("/api/v1/documents/exports/all.csv", headers=headers).status_code == 400
    reader = {"Authorization": f"Bearer {token_for('documents:read')}"}
    forbidden = client.post(
        "/api/v1/documents", json={"kind": "synthesis", "patient_id": unknown}, headers=reader
    )
    assert forbidden.status_code == 403


def test_cli_generates_and_verifies(
    appliance: tuple[TestClient[Any], Platform],
    token_for: Callable[..., str],
    pki: Pki,
    tmp_path: Path,
) -> None:
    client, _ = appliance
    headers = {"Authorization": f"Bearer {token_for()}"}
    pid, _cid = _setup_patient(client, headers)
    runner = CliRunner()
    out = tmp_path / "plan.pdf"
    result = runner.invoke(main, ["documents", "generate", "plan_de_prise", pid, "-o", str(out)])
    assert result.exit_code == 0, result.output
    document_id = result.stderr.split()[0] if result.stderr else result.output.split()[0]
    assert "DOLIPRANE" in pdf_text(out.read_bytes())
    signed_out = tmp_path / "signed.pdf"
    result = runner.invoke(main, ["documents", "sign", document_id, "-o", str(signed_out)])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(main, ["documents", "list", pid])
    assert listed.exit_code == 0, listed.output
    assert document_id in listed.output
    assert "signé" in listed.output
    again = tmp_path / "again.pdf"
    result = runner.invoke(main, ["documents", "download", document_id, "-o", str(again)])
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == out.read_bytes()
    assert runner.invoke(main, ["documents", "download", "doc-inconnu"]).exit_code == 2
    result = runner.invoke(main, ["documents", "verify", str(signed_out)])
    assert result.exit_code == 0, result.output
    assert "signature valide" in result.output
    result = runner.invoke(main, ["documents", "verify", str(out)])
    assert result.exit_code == 6
    assert "aucune signature" in result.output
    result = runner.invoke(main, ["documents", "generate", "synthesis", "inconnu"])
    assert result.exit_code == 2
    assert "patient inconnu" in result.output
    result = runner.invoke(main, ["documents", "export", "bpm-status"])
    assert result.exit_code == 0
    assert pid in result.output
