"""The CPS through PKCS#11 (the Cryptolib path) against a real PKCS#11 module: SoftHSM 2.

The token's RSA key is generated on the token and never leaves it; its certificate names a
pharmacist the way a CPS certificate does, under the virtual cards' test CA. The dialogue
runs in a child process: a PKCS#11 module is initialised once per process (with the
``SOFTHSM2_CONF`` of that moment), and other tests load SoftHSM with their own tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")

pytestmark = pytest.mark.skipif(
    not MODULE.exists() or shutil.which("softhsm2-util") is None,
    reason="SoftHSM 2 is not installed (Debian package softhsm2, in install.sh APT_PACKAGES)",
)

SCRIPT = r"""
import hashlib, json, sys
import pkcs11
from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from appliance.config import Settings
from drivers.cps_vitale import CardConfig, CardError, open_signer
from drivers.cps_vitale.virtual.pki import certificate_for, test_ca
from services.cards.logic import CpsPinAuthenticator

module, roots = sys.argv[1], sys.argv[2]
token = pkcs11.lib(module).get_token(token_label="CPS DURAND")
with token.open(rw=True, user_pin="1234") as session:
    public, _ = session.generate_keypair(KeyType.RSA, 2048, store=True, label="auth", id=b"\x07")
    key = rsa.RSAPublicNumbers(
        int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
        int.from_bytes(public[Attribute.MODULUS], "big"),
    ).public_key()
    cert = certificate_for(key, "DURAND", "CLAIRE", "810000424268", "Pharmacien")
    session.create_object({
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
        Attribute.SUBJECT: cert.subject.public_bytes(),
        Attribute.LABEL: "auth", Attribute.ID: b"\x07", Attribute.TOKEN: True,
    })
open(roots, "wb").write(test_ca()[1].public_bytes(serialization.Encoding.PEM))
out = {}
config = CardConfig(pkcs11_module=module)
with open_signer(config=config) as cps:
    out["rpps"] = cps.holder().rpps
    try:
        cps.sign(hashlib.sha256(b"FSE").digest())
    except CardError as exc:
        out["before_pin"] = exc.code
    try:
        cps.verify_pin("0000")
    except CardError as exc:
        out["wrong_pin"] = exc.code
    cps.verify_pin("1234")
    signature = cps.sign(hashlib.sha256(b"FSE").digest())
    cps.certificate().public_key().verify(signature, b"FSE", padding.PKCS1v15(), hashes.SHA256())
    out["signed"] = len(signature)
settings = Settings(cards_pkcs11_module=module, cards_cps_trust_roots=roots)
out["login"] = CpsPinAuthenticator(settings).authenticate_pin("terminal", "1234")
try:
    with open_signer(config=CardConfig(pkcs11_module="/nonexistent/libcryptolib.so")):
        pass
except CardError as exc:
    out["missing_module"] = exc.code
print(json.dumps(out))
"""


@pytest.mark.slow
def test_cps_through_pkcs11_module(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "CPS DURAND",
            "--pin",
            "1234",
            "--so-pin",
            "12345678",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(MODULE), str(tmp_path / "roots.pem")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {
        "rpps": "10000424268",
        "before_pin": "pin_required",
        "wrong_pin": "wrong_pin",
        "signed": 256,
        "login": "10000424268",
        "missing_module": "pkcs11_unavailable",
    }
