"""A live appliance with a small realistic pharmacy, and a real Chromium to drive the UI.

Shared by the end-to-end tests (``tests/test_web_e2e.py``) and the screenshot command
(``scripts/screenshots.py``): ``hygie keys init``, ``db migrate`` and ``catalog import`` of
the mini BDPM run as real CLI processes, ``hygie serve`` runs on loopback, the data is
created through the HTTP API with a token from the authorization code flow, and the
browser is Debian's ``/usr/bin/chromium`` driven by Playwright (its own browser download
cannot work offline and is never used).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from appliance.platform import open_platform
from services.identity.logic import pkce_challenge
from tests.helpers_server import (
    REPO_ROOT,
    free_port,
    prepare_appliance,
    run_cli,
    running_server,
    settings_for,
)
from tests.identity_support import PASSWORD, make_user, rpps

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = REPO_ROOT / "appliance" / "web" / "node_modules" / "axe-core" / "axe.min.js"
MINI_CATALOG = REPO_ROOT / "tests" / "fixtures" / "bdpm-mini"
P12_PASSPHRASE = "pharmacie-test"

PHARMACIST = "claire"
PREPARATEUR = "lucas"
COUMADINE = "63245753"  # warfarin 5 mg (mini BDPM)
KARDEGIC = "64755969"  # aspirin 75 mg
CORDARONE = "60662396"  # amiodarone 200 mg
AMLOR = "63458349"  # amlodipine 5 mg
LEVOTHYROX = "68416845"  # levothyroxine 100 µg
COUMADINE_CIP13 = "3400935693099"
PATIENT_NAME = "DURAND"


@dataclass
class Appliance:
    base_url: str
    env: dict[str, str]
    log: Path
    token: str
    patient_id: str


def _signing_identity(folder: Path, keys: Path) -> Path:
    """A self-signed PKCS#12 identity for the document signatures of the test pharmacy."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Claire Pharmacienne (test)"),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = folder / "pharmacien.p12"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"pharmacien",
            key,
            cert,
            None,
            serialization.BestAvailableEncryption(P12_PASSPHRASE.encode()),
        )
    )
    keys.mkdir(parents=True, exist_ok=True)
    secret = keys / "documents-signing-passphrase"
    secret.write_text(P12_PASSPHRASE)
    secret.chmod(0o600)
    return path


def prepare(folder: Path) -> dict[str, str]:
    """Keys, databases, the mini catalogue, two accounts and a signing identity."""
    (folder / "pki").mkdir(parents=True, exist_ok=True)
    p12 = _signing_identity(folder / "pki", folder / "keys")
    env = prepare_appliance(folder, HYGIE_DOCUMENTS_SIGNING_PKCS12=str(p12))
    result = run_cli(env, "catalog", "import", str(MINI_CATALOG), timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    platform = open_platform(settings_for(env))
    try:
        make_user(
            platform,
            PHARMACIST,
            "pharmacien_titulaire",
            display_name="Claire Martin",
            rpps_number=rpps(4242),
        )
        make_user(platform, PREPARATEUR, "preparateur", display_name="Lucas Petit")
    finally:
        platform.close()
    return env


def api_token(base_url: str, username: str = PHARMACIST) -> str:
    """An access token by the same authorization code flow (PKCE) the browser uses."""
    verifier = secrets.token_urlsafe(48)
    redirect_uri = base_url + "/ui/callback"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        page = client.get(
            "/oauth/authorize",
            params={
                "response_type": "code",
                "client_id": "hygie-web",
                "redirect_uri": redirect_uri,
                "state": "seed",
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            },
        )
        found = re.search(r'name="request_id" value="([^"]+)"', page.text)
        assert found, page.text
        answer = client.post(
            "/oauth/authorize",
            data={
                "request_id": found.group(1),
                "method": "password",
                "username": username,
                "password": PASSWORD,
            },
        )
        assert answer.status_code == 303, answer.text
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        tokens = client.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": "hygie-web",
            },
        )
        assert tokens.status_code == 200, tokens.text
        return str(tokens.json()["access_token"])


def seed_patient(base_url: str, token: str, family: str = PATIENT_NAME) -> str:
    """An 86-year-old on warfarin, aspirin, amiodarone, amlodipine and levothyroxine for a
    year (BPM-eligible: 65 or more, 5 substances over 6 months): findings to review."""
    headers = {"Authorization": f"Bearer {token}"}
    year_ago = (date.today() - timedelta(days=365)).isoformat()
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        created = client.post(
            "/api/v1/patients",
            json={
                "identity": {
                    "birth_family_name": family,
                    "given_names": "Paulette Marie",
                    "birth_date": "1940-03-14",
                    "sex": "F",
                },
                "gp": {"name": "Dr Bernard Lefèvre"},
                "coverage": {"amo": {"regime": "01", "caisse": "751"}},
                "clinical": {
                    "conditions": [
                        {"icd10": "I48", "label": "Fibrillation auriculaire"},
                        {"icd10": "I10", "label": "Hypertension essentielle"},
                    ],
                    "lab_results": [
                        {
                            "loinc": "2160-0",
                            "value": 1.1,
                            "unit": "mg/dL",
                            "observed_on": date.today().isoformat(),
                            "label": "Créatinine",
                        }
                    ],
                    "weight_kg": {"value": 58, "observed_on": date.today().isoformat()},
                },
            },
        )
        assert created.status_code == 201, created.text
        pid = str(created.json()["id"])
        for prescribed_on in (year_ago, (date.today() - timedelta(days=20)).isoformat()):
            posology = {"times_per_day": 1, "duration": {"value": 3, "unit": "month"}}
            rx = client.post(
                "/api/v1/prescriptions",
                json={
                    "patient_id": pid,
                    "prescriber": {"name": "Dr Bernard Lefèvre"},
                    "prescribed_on": prescribed_on,
                    "lines": [
                        {"cis": cis, "posology": {**posology, "dose": 1, "unit": unit}}
                        for cis, unit in (
                            (COUMADINE, "comprimé"),
                            (KARDEGIC, "sachet"),
                            (CORDARONE, "comprimé"),
                            (AMLOR, "gélule"),
                            (LEVOTHYROX, "comprimé"),
                        )
                    ],
                },
            )
            assert rx.status_code == 201, rx.text
        for months in range(0, 12, 3):
            day = (date.today() - timedelta(days=365 - 30 * months)).isoformat()
            for cis in (COUMADINE, KARDEGIC, CORDARONE, AMLOR, LEVOTHYROX):
                dispensed = client.post(
                    f"/api/v1/patients/{pid}/dispensings",
                    json={"dispensed_on": day, "quantity": 3, "cis": cis},
                )
                assert dispensed.status_code == 201, dispensed.text
        return pid


@contextlib.contextmanager
def live_appliance(folder: Path) -> Iterator[Appliance]:
    """``hygie serve`` on loopback with the seeded pharmacy; stopped on exit."""
    env = prepare(folder)
    port = free_port()
    env["HYGIE_PUBLIC_URL"] = f"http://127.0.0.1:{port}"  # the OpenID issuer, as in production
    log = folder / "server.log"
    with running_server(env, log, port=port) as (_, base_url):
        token = api_token(base_url)
        pid = seed_patient(base_url, token)
        yield Appliance(base_url=base_url, env=env, log=log, token=token, patient_id=pid)


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, with the flags of an offline counter terminal."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )


def login(page: Any, base_url: str, username: str = PHARMACIST, target: str = "/ui/") -> None:
    """Open a UI page, get sent to the login page, sign in with the password."""
    page.goto(base_url + target)
    if "/oauth/authorize" not in page.url:
        page.get_by_role("link", name="Se connecter").click()
    page.wait_for_url("**/oauth/authorize**")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form:has(input[name=password]) button[type=submit]").first.click()
    wanted = target.split("?")[0].rstrip("/")
    page.wait_for_url(lambda url: urlsplit(url).path.rstrip("/") == wanted)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Serious and critical WCAG 2.1 A/AA violations axe-core finds on the page."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {runOnly: {type: 'tag',
                values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=1)
