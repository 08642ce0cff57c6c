"""The counter's billing screens in process: « Facturer » on the BPM cycle page (remote and
ALD options) and its refusals, the « Facturation » page (FSE states, « Signer » with the CPS
PIN or the appliance's key, « Constituer un lot », a return file uploaded, unpaid and
rejected lists, monthly summary), scopes and audit.

The billing API refuses the real BPM acts (``tariff-unconfirmed``) until a site tariff file
supplies the official codes and amounts; these tests supply :data:`WEB_TEST_TARIFF`, a TEST
tariff with fictitious amounts (never shipped). The return files are written by the LOCAL
teleservice simulator (``services.sesam_vitale.simulator``), in process. The CPS PIN test
uses the virtual CPS in the real pcscd (tests/test_cards.py's fixture; it skips, saying why,
only where pcscd or vpcd cannot run).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.platform import Platform
from services.sesam_vitale.signing import SIGNER_CERT_FILE, SIGNER_KEY_FILE
from services.sesam_vitale.simulator import SimBeneficiary, SimData, Simulator
from tests.identity_support import app_platform, make_user, shared_client
from tests.test_cards import Inserted, cps, vpcd_port
from tests.test_sesam_logic import make_test_ca
from tests.test_web_routes import csrf_of, signed_in

__all__ = ["vpcd_port"]  # the pcscd fixture, imported to be shared

WEB_TEST_TARIFF = textwrap.dedent(
    """
    schema_version = 1

    [[editions]]
    id = "web-test-tariff"
    valid_from = 2025-01-09
    title = "TEST TARIFF - fictitious codes and amounts for the web UI tests only"
    sources = ["tests/test_web_billing.py"]
    test_only = true

    [[editions.acts]]
    key = "adhesion"
    code = "TAC"
    label = "Adhésion (test)"
    bpm_steps = ["adhesion"]
    interview = false
    amount_eur = 0.01
    amo_rate = 100
    sources = ["test"]

    [[editions.acts]]
    key = "recueil"
    code = "XR1"
    label = "Recueil (test)"
    bpm_steps = ["recueil"]
    interview = true
    amount_eur = 33.33
    amo_rate = 70
    sources = ["test"]

    [[editions.acts]]
    key = "analyse"
    label = "Analyse (test, left unconfirmed on purpose)"
    bpm_steps = ["analyse"]
    interview = false
    sources = ["test"]
    doubt = "test: no code, to check the refusal"

    [[editions.acts]]
    key = "transmission"
    label = "Transmission (test)"
    bpm_steps = ["transmission"]
    interview = false
    billed = false
    sources = ["test"]

    [editions.remote]
    code = "TPH"
    label = "À distance (test)"
    amount_eur = 0.0
    sources = ["test"]
    """
)
"""A TEST tariff: fictitious codes and amounts, valid from the day after the shipped
edition so that it is the one in force for steps done today."""

JEANNE_NIR = "248027512345642"
PAUL_NIR = "152067512345657"
_ORDERS = iter(range(500, 999))


def fresh_nir() -> str:
    """Another valid NIR (woman born in February 1948, key checked): NIRs are unique."""
    body = f"2480275123{next(_ORDERS):03d}"
    return f"{body}{97 - int(body) % 97:02d}"


AMO = {"regime": "01", "caisse": "751", "centre": "0001"}
SIM = SimData(
    beneficiaries=(
        SimBeneficiary(
            nir=JEANNE_NIR,
            birth_family_name="MARTIN",
            given_names="JEANNE MARIE",
            birth_date=date(1948, 2, 14),
            sex="F",
            amc_organisation="Mutuelle test",
        ),
        SimBeneficiary(  # rights closed: the simulator rejects the FSE (DRT)
            nir=PAUL_NIR,
            birth_family_name="DURAND",
            given_names="PAUL",
            birth_date=date(1952, 6, 3),
            sex="M",
            rights_until=date(2024, 3, 31),
        ),
    )
)


@dataclass
class Env:
    app: Any
    platform: Platform
    api: TestClient[Any]
    headers: dict[str, str]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("webbilling")
    (tmp / "app").mkdir()
    tariff = tmp / "web-test-tariff.toml"
    tariff.write_text(WEB_TEST_TARIFF, encoding="utf-8")
    with shared_client(tmp / "app", billing_tariff_file=tariff, cards_read_timeout_s=3.0) as client:
        platform = app_platform(client)
        _, _, key_pem, cert_pem = make_test_ca(tmp)
        keys = Path(platform.settings.key_path)
        (keys / SIGNER_KEY_FILE).write_bytes(key_pem)
        (keys / SIGNER_CERT_FILE).write_bytes(cert_pem)
        make_user(platform, "claire", "pharmacien_titulaire", display_name="Claire Titulaire")
        make_user(platform, "etud", "etudiant", display_name="Eva Étudiante")
        assert platform.tokens is not None
        token = platform.tokens.issue(
            subject="seed",
            role="pharmacien_titulaire",
            scopes=("patients:read", "patients:write", "bpm:read", "bpm:write", "billing:read"),
        )
        yield Env(client.app, platform, client, {"Authorization": f"Bearer {token}"})


def make_patient(env: Env, family: str, **extra: Any) -> str:
    identity = {"birth_family_name": family, "given_names": "Test", "sex": "F"}
    identity["birth_date"] = extra.pop("birth_date", "1948-02-14")
    if "nir" in extra:
        identity["nir"] = extra.pop("nir")
        identity["sex"] = "M" if identity["nir"].startswith("1") else "F"
    body = {
        "identity": identity,
        "consents": [{"kind": "bpm_adhesion", "status": "granted", "decided_on": "2025-02-01"}],
        **extra,
    }
    made = env.api.post("/api/v1/patients", json=body, headers=env.headers)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def open_cycle(env: Env, pid: str, steps: list[str]) -> str:
    today = date.today().isoformat()
    opened = env.api.post(
        "/api/v1/bpm", json={"patient_id": pid, "opened_on": today}, headers=env.headers
    )
    assert opened.status_code == 201, opened.text
    cid = str(opened.json()["id"])
    version = opened.json()["version"]
    for kind in steps:
        body = {"expected_version": version, "kind": kind, "performed_on": today}
        done = env.api.post(f"/api/v1/bpm/{cid}/steps", json=body, headers=env.headers)
        assert done.status_code == 200, done.text
        version = done.json()["version"]
    return cid


def fse_count(env: Env) -> int:
    listed = env.api.get("/api/v1/billing/fse", params={"limit": 500}, headers=env.headers)
    assert listed.status_code == 200, listed.text
    return len(listed.json())


def bill(client: TestClient[Any], cid: str, step: str, **form: str) -> Any:
    data = {"csrf_token": csrf_of(client), "step": step, **form}
    return client.post(f"/ui/bpm/{cid}/bill", data=data, follow_redirects=False)


_open: list[TestClient[Any]] = []
"""Browser clients of the module: a client's exit ends the app's lifespan (closes the
platform), so they are all closed together, after the last test."""


@pytest.fixture(scope="module")
def claire(env: Env) -> Iterator[TestClient[Any]]:
    client = signed_in(env.app, "claire")
    _open.append(client)
    yield client
    while _open:
        _open.pop().__exit__(None, None, None)


def text_of(html: str) -> str:
    """The page's words (tags out, spaces folded) for assertions on what the counter reads."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_cycle_page_bills_done_steps_with_remote_and_ald_options(
    env: Env, claire: TestClient[Any]
) -> None:
    pid = make_patient(
        env,
        "FACTURE",
        nir=fresh_nir(),
        coverage={
            "amo": AMO,
            "ald": [{"icd10": "E11"}],
            "amc": {"organisation": "Mutuelle test"},
        },
    )
    cid = open_cycle(env, pid, ["adhesion", "recueil", "analyse", "transmission"])
    page = claire.get(f"/ui/bpm/{cid}")
    assert page.status_code == 200, page.text
    assert "Facturation des étapes" in page.text
    assert page.text.count('action="/ui/bpm/' + cid + '/bill"') == 3  # not the transmission
    assert "non facturée à part" in page.text
    assert 'id="bill-remote-recueil"' in page.text  # an entretien may be remote
    assert 'id="bill-remote-adhesion"' not in page.text
    before = fse_count(env)

    done = bill(claire, cid, "adhesion")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/ui/bpm/{cid}"
    remote = bill(claire, cid, "recueil", remote="on", exoneration="ald")
    assert remote.status_code == 303, remote.text
    assert fse_count(env) == before + 2

    words = text_of(claire.get(f"/ui/bpm/{cid}").text)
    assert re.search(r"FSE n° \d+ créée \(33,33\s€\) : signez-la", words), words
    assert re.search(r"Adhésion .* FSE n° \d+ — créée, 0,01\s€", words)
    assert re.search(r"Entretien de recueil .* FSE n° \d+ — créée, 33,33\s€ \(à distance\)", words)
    listed = env.api.get(f"/api/v1/billing/patients/{pid}/invoices", headers=env.headers).json()
    recueil = next(i for i in listed if i["invoice"]["bpm_step"] == "recueil")
    assert recueil["invoice"]["remote"] is True
    assert recueil["invoice"]["test_tariff"] is True
    assert recueil["invoice"]["patient_cents"] == 0  # ALD: the ticket modérateur is waived
    audit = [e for e in env.platform.audit.entries(limit=100_000) if e.action == "bill_act"]
    assert audit[-1].object_id == pid
    assert audit[-1].outcome == "success"
    assert audit[-1].purpose == "billing"
    assert audit[-1].role == "pharmacien_titulaire"


REFUSALS = {
    "no-nir": "Le NIR du patient n'est pas renseigné : lisez sa carte Vitale avant de facturer.",
    "no-coverage": "Aucun droit à l'Assurance Maladie obligatoire n'est ouvert",
    "tariff-unconfirmed": "Le code ou le tarif de l'acte « Analyse (test, left unconfirmed",
    "no-ald": "Le patient n'a pas d'ALD en cours à la date de l'acte",
    "already-billed": "Cette étape est déjà facturée",
}


def test_refusals_show_the_french_reason_and_store_nothing(
    env: Env, claire: TestClient[Any]
) -> None:
    without_nir = open_cycle(env, make_patient(env, "SANSNIR", coverage={"amo": AMO}), ["adhesion"])
    uncovered = open_cycle(env, make_patient(env, "SANSDROITS", nir=fresh_nir()), ["adhesion"])
    covered = make_patient(env, "REFUS", nir=fresh_nir(), coverage={"amo": AMO})
    cid = open_cycle(env, covered, ["adhesion", "recueil", "analyse"])
    cases = [
        ("no-nir", without_nir, "adhesion", {}),
        ("no-coverage", uncovered, "adhesion", {}),
        ("tariff-unconfirmed", cid, "analyse", {}),
        ("no-ald", cid, "recueil", {"exoneration": "ald"}),
    ]
    assert bill(claire, cid, "adhesion").status_code == 303
    cases.append(("already-billed", cid, "adhesion", {}))
    before = fse_count(env)
    for slug, cycle, step, form in cases:
        refused = bill(claire, cycle, step, **form)
        assert refused.status_code == 409, (slug, refused.text)
        assert "Facturation refusée" in refused.text
        words = text_of(refused.text)
        assert REFUSALS[slug] in words, (slug, words)
        assert "Rien n'a été enregistré." in words
        assert "Traceback" not in refused.text
        assert f'href="/ui/bpm/{cycle}"' in refused.text
    assert fse_count(env) == before
    refusals = [
        e
        for e in env.platform.audit.entries(limit=100_000)
        if e.action == "bill_act" and e.outcome == "refused"
    ]
    assert len(refusals) >= len(cases)
    tampered = bill(claire, cid, "nonsense")
    assert tampered.status_code == 400
    assert "Demande invalide : rechargez la page" in tampered.text


def test_assistant_without_billing_scopes_cannot_bill(env: Env, claire: TestClient[Any]) -> None:
    cid = open_cycle(env, make_patient(env, "ETUDE", nir=fresh_nir(), coverage={"amo": AMO}), [])
    student = signed_in(env.app, "etud")  # closed after the module (it shares the app's life)
    _open.append(student)
    if True:
        page = student.get(f"/ui/bpm/{cid}")
        assert page.status_code == 200, page.text
        assert "Facturation des étapes" not in page.text
        assert 'href="/ui/billing"' not in page.text  # no navigation entry
        refused = bill(student, cid, "adhesion")
        assert refused.status_code == 403
        assert "Votre rôle ne donne pas accès" in refused.text
        assert student.get("/ui/billing").status_code == 403
        signing = student.post(
            f"/ui/billing/fse/{'0' * 8}-0000-4000-8000-{'0' * 12}/sign",
            data={"csrf_token": csrf_of(student)},
        )
        assert signing.status_code == 403
        lot = student.post("/ui/billing/lots", data={"csrf_token": csrf_of(student)})
        assert lot.status_code == 403


def fse_ids(env: Env, state: str) -> list[str]:
    listed = env.api.get(
        "/api/v1/billing/fse", params={"state": state, "limit": 500}, headers=env.headers
    )
    return [f["id"] for f in listed.json()]


def patient_fse(env: Env, pid: str) -> str:
    listed = env.api.get(f"/api/v1/billing/patients/{pid}/invoices", headers=env.headers)
    return str(listed.json()[0]["invoice"]["fse_id"])


def upload(client: TestClient[Any], name: str, content: bytes) -> Any:
    return client.post(
        "/ui/billing/returns",
        data={"csrf_token": csrf_of(client)},
        files={"file": (name, content, "text/plain")},
    )


def test_billing_page_signs_sends_a_lot_and_applies_the_returns(
    env: Env, claire: TestClient[Any]
) -> None:
    jeanne = make_patient(
        env,
        "PAYEE",
        nir=JEANNE_NIR,
        coverage={"amo": AMO, "amc": {"organisation": "Mutuelle test"}},
    )
    paul = make_patient(env, "REJETE", nir=PAUL_NIR, birth_date="1952-06-03", coverage={"amo": AMO})
    for pid in (jeanne, paul):
        cid = open_cycle(env, pid, ["adhesion", "recueil"])
        assert bill(claire, cid, "recueil").status_code == 303
    page = claire.get("/ui/billing")
    assert page.status_code == 200, page.text
    words = text_of(page.text)
    assert "PAYEE Test" in words
    assert "REJETE Test" in words
    assert "tarif de test" in words
    assert 'href="/ui/billing" aria-current="page"' in page.text
    created = claire.get("/ui/billing?state=created")
    assert created.status_code == 200
    shown = re.findall(r'<tr id="fse-([0-9a-f-]+)"', created.text)
    assert sorted(shown) == sorted(fse_ids(env, "created"))
    assert claire.get("/ui/billing?state=bogus").status_code == 400

    # Sign this test's FSEs: a malformed PIN is refused before the card; an empty PIN signs
    # with the appliance's configured key (the test CA's).
    waiting = [patient_fse(env, pid) for pid in (jeanne, paul)]
    bad = claire.post(
        f"/ui/billing/fse/{waiting[0]}/sign", data={"csrf_token": csrf_of(claire), "pin": "12"}
    )
    assert bad.status_code == 400
    assert "Le code PIN de la carte CPS comporte 4 à 8 chiffres." in bad.text
    assert 'aria-invalid="true"' in bad.text
    for fse_id in waiting:
        signed = claire.post(
            f"/ui/billing/fse/{fse_id}/sign",
            data={"csrf_token": csrf_of(claire), "pin": ""},
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
    words = text_of(claire.get("/ui/billing").text)
    assert re.search(r"FSE n° \d+ signée\.", words)
    again = claire.post(f"/ui/billing/fse/{waiting[0]}/sign", data={"csrf_token": csrf_of(claire)})
    assert again.status_code == 409
    assert "Signature refusée" in again.text

    # « Constituer un lot »: every signed FSE in one lot, handed to the outbox.
    sent = claire.post("/ui/billing/lots", data={"csrf_token": csrf_of(claire)})
    assert sent.status_code == 200, sent.text
    words = text_of(sent.text)
    found = re.search(rf"Lot n° (\d+) de {len(waiting)} FSE mis en envoi\.", words)
    assert found, words
    assert "Aucune FSE signée en attente d'envoi." in words
    lots = env.api.get("/api/v1/billing/lots", headers=env.headers).json()
    lot = next(item for item in lots if str(item["lot"]["number"]) == found.group(1))
    assert lot["lot"]["outbox_sequence"] is not None

    # The simulator answers the lot: an ARL, then the payment return (Jeanne paid, Paul's
    # FSE rejected for closed rights); both files uploaded at the counter.
    sim = Simulator(SIM, None)
    fses = [
        env.api.get(f"/api/v1/billing/fse/{fid}", headers=env.headers).json()
        for fid in lot["lot"]["fse_ids"]
    ]
    payload = {
        "lot_id": lot["id"],
        "number": lot["lot"]["number"],
        "fses": [{"fse_id": f["id"], "fse": f["fse"]} for f in fses],
    }
    ack = sim.receive_lot(payload)
    applied = upload(claire, "arl.txt", ack.encode())
    assert applied.status_code == 200, applied.text
    assert "1 lot(s) acquitté(s)" in text_of(applied.text)
    applied = upload(claire, "retour.txt", sim.returns[lot["id"]].encode())
    words = text_of(applied.text)
    assert "1 FSE payée(s), 1 FSE rejetée(s)" in words, words
    assert "DRT Droits non ouverts à la date des soins" in words  # rejected list and FSE
    repeat = upload(claire, "retour.txt", sim.returns[lot["id"]].encode())
    assert "Ce fichier a déjà été appliqué : rien n'a changé." in repeat.text

    # The lists and the month: Jeanne's complementary share is still owed.
    words = text_of(claire.get("/ui/billing").text)
    unpaid = words.split("Factures dont une part reste due")[1].split("FSE rejetées")[0]
    assert "PAYEE Test" in unpaid
    assert "payée" in unpaid
    rejected = words.split("à corriger et refacturer")[1].split("Synthèse du mois")[0]
    assert "REJETE Test" in rejected
    assert "PAYEE Test" not in rejected
    month = date.today().strftime("%Y-%m")
    summary = text_of(claire.get(f"/ui/billing?month={month}").text).split("Synthèse du mois")[1]
    assert "XR1 :" in summary
    assert "payée : 1" in summary
    assert "rejetée : 1" in summary
    assert claire.get("/ui/billing?month=2026-13").status_code == 400

    # Malformed uploads: French refusals, nothing applied.
    broken = upload(claire, "retour.txt", b"000|NOEMIE-HYGIE|1|X|20260101\nnonsense\n")
    assert broken.status_code == 400
    assert "Fichier de retour refusé : Fichier de retour illisible" in broken.text
    binary = upload(claire, "image.png", b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert binary.status_code == 400
    assert "pas un fichier texte UTF-8" in binary.text
    empty = claire.post("/ui/billing/returns", data={"csrf_token": csrf_of(claire)})
    assert empty.status_code == 400
    assert "Choisissez le fichier de retour" in empty.text

    # Each list naming patients was audited under the page's request.
    page = claire.get("/ui/billing")
    request_id = page.headers["x-request-id"]
    actions = {
        e.action for e in env.platform.audit.entries(limit=100_000) if e.request_id == request_id
    }
    assert {"fse_list", "billing_unpaid", "billing_rejected", "read"} <= actions


def test_signing_with_the_cps_pin_shows_the_tries_left(
    env: Env, claire: TestClient[Any], vpcd_port: int
) -> None:
    pid = make_patient(env, "CARTE", nir=fresh_nir(), coverage={"amo": AMO})
    cid = open_cycle(env, pid, ["adhesion"])
    assert bill(claire, cid, "adhesion").status_code == 303
    fse_id = patient_fse(env, pid)
    with Inserted(vpcd_port, cps()):
        wrong = claire.post(
            f"/ui/billing/fse/{fse_id}/sign", data={"csrf_token": csrf_of(claire), "pin": "0000"}
        )
        assert wrong.status_code == 409, wrong.text
        assert "Signature refusée : Code PIN incorrect : il reste 2 essais" in wrong.text
        assert fse_id in fse_ids(env, "created")  # nothing changed
        right = claire.post(
            f"/ui/billing/fse/{fse_id}/sign",
            data={"csrf_token": csrf_of(claire), "pin": "1234"},
            follow_redirects=False,
        )
        assert right.status_code == 303, right.text
    assert fse_id in fse_ids(env, "signed")
    signature = env.api.get(f"/api/v1/billing/fse/{fse_id}", headers=env.headers).json()
    assert signature["fse"]["signature"]["signer_rpps"] == "10001234567"  # the card's holder
