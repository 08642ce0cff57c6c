"""The PKCS#11 signer (the CPS card's path in production) against a real PKCS#11 module:
SoftHSM 2 (Debian ``softhsm2``), a token whose RSA key is generated on the token and never
leaves it, like the key of a CPS card behind the ANS Cryptolib. Signed through pyhanko's
PKCS#11 support, validated against the test CA; a wrong PIN is refused; and the API signs
with the module named in the configuration and the PIN given in the request."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from litestar.testing import TestClient

from appliance.cli import main
from appliance.config import load_settings
from appliance.platform import Platform
from appliance.tasks import record_heartbeat
from services.documents import signing, workflow
from tests.test_documents import FIXTURE, _rich_model, _setup_patient, _usage

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
TOKEN = "hygie-cps"
PIN = "1234"
LABEL = "signature-pharmacien"

pytestmark = pytest.mark.skipif(
    not MODULE.exists() or shutil.which("softhsm2-util") is None,
    reason="SoftHSM 2 is not installed (Debian package softhsm2, in install.sh APT_PACKAGES)",
)


class Token:
    def __init__(self, root: Path) -> None:
        import pkcs11
        from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass

        tokens = root / "tokens"
        tokens.mkdir(parents=True)
        conf = root / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                TOKEN,
                "--pin",
                PIN,
                "--so-pin",
                "12345678",
            ],
            check=True,
            capture_output=True,
        )
        now = datetime.now(UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AC TEST HYGIE PKCS11")])
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
            .sign(ca_key, hashes.SHA256())
        )
        token = pkcs11.lib(str(MODULE)).get_token(token_label=TOKEN)
        with token.open(rw=True, user_pin=PIN) as session:
            public, _private = session.generate_keypair(
                KeyType.RSA, 2048, store=True, label=LABEL, id=b"\x01"
            )
            numbers = rsa.RSAPublicNumbers(
                int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
                int.from_bytes(public[Attribute.MODULUS], "big"),
            )
            subject = x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "899700000001/Pharmacien CPS test"),
                ]
            )
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(ca_name)
                .public_key(numbers.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_usage(cert_sign=False), critical=True)
                .sign(ca_key, hashes.SHA256())
            )
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                    Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
                    Attribute.SUBJECT: subject.public_bytes(),
                    Attribute.LABEL: LABEL,
                    Attribute.ID: b"\x01",
                    Attribute.TOKEN: True,
                }
            )
        self.ca_pem = root / "ca.pem"
        self.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    before = os.environ.get("SOFTHSM2_CONF")
    yield Token(tmp_path_factory.mktemp("softhsm"))
    if before is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = before


def _signer(pin: str) -> signing.Pkcs11Signer:
    return signing.Pkcs11Signer(
        MODULE, pin=pin, token_label=TOKEN, key_label=LABEL, cert_label=LABEL
    )


def test_pkcs11_token_signs_and_the_signature_validates(token: Token) -> None:
    signed, subject = signing.sign_pdf(
        render_pdf(), _signer(PIN), reason="Synthèse BPM", location="Paris"
    )
    assert "Pharmacien CPS test" in subject
    result = signing.verify_pdf(signed, signing.load_trust_roots(token.ca_pem))
    assert (result.intact, result.valid, result.trusted) == (True, True, True)
    with pytest.raises(signing.SigningError, match="code PIN refusé"):
        signing.sign_pdf(render_pdf(), _signer("0000"), reason="r", location=None)
    with pytest.raises(signing.SigningError):
        signing.sign_pdf(
            render_pdf(),
            signing.Pkcs11Signer(MODULE, pin=PIN, token_label="absent"),
            reason="r",
            location=None,
        )


def render_pdf() -> bytes:
    from services.documents import render

    return render.render(_rich_model(), "pdf")


def test_api_signs_with_the_configured_pkcs11_module(
    token: Token,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    token_for: Callable[..., str],
) -> None:
    from appliance.app import create_app

    result = CliRunner().invoke(main, ["catalog", "import", str(FIXTURE)])
    assert result.exit_code == 0, result.output
    for key, value in {
        "HYGIE_DOCUMENTS_PKCS11_MODULE": str(MODULE),
        "HYGIE_DOCUMENTS_PKCS11_TOKEN_LABEL": TOKEN,
        "HYGIE_DOCUMENTS_PKCS11_KEY_LABEL": LABEL,
        "HYGIE_DOCUMENTS_PKCS11_CERT_LABEL": LABEL,
        "HYGIE_DOCUMENTS_TRUST_ROOTS": str(token.ca_pem),
    }.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert isinstance(workflow.configured_signer(settings, pin=PIN), signing.Pkcs11Signer)
    app = create_app(settings)
    with TestClient(app=app) as client:
        record_heartbeat(app.state.platform.store, "test-worker")
        platform: Platform = app.state.platform
        headers = {"Authorization": f"Bearer {token_for()}"}
        pid, _ = _setup_patient(client, headers)
        made = client.post(
            "/api/v1/documents", json={"kind": "plan_de_prise", "patient_id": pid}, headers=headers
        )
        assert made.status_code == 201, made.text
        doc = made.json()["id"]
        wrong = client.post(
            f"/api/v1/documents/{doc}/signature", json={"pin": "0000"}, headers=headers
        )
        assert wrong.status_code == 403
        assert wrong.json()["type"].endswith("signer-refused")
        signed = client.post(
            f"/api/v1/documents/{doc}/signature", json={"pin": PIN}, headers=headers
        )
        assert signed.status_code == 201, signed.text
        copy: dict[str, Any] = signed.json()
        check = client.get(f"/api/v1/documents/{copy['id']}/verification", headers=headers)
        assert check.json()["summary"] == "signature valide, document intact, certificat reconnu"
        outcomes = [
            (e.action, e.outcome) for e in platform.audit.entries() if e.object_type == "document"
        ]
        assert ("sign", "refused") in outcomes
        assert ("sign", "success") in outcomes
