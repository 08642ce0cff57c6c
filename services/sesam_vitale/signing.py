"""Signing an FSE: the :class:`FseSigner` protocol and its software-key implementation.

In production the FSE is signed by the pharmacist's CPS card (through the cards service's
signing API, PIN verified by the card); that adapter plugs in behind the same protocol. The
software signer holds an RSA key and its X.509 certificate (PKCS#1 v1.5 with SHA-256, the
scheme of the CPS signature key): tests and demos use a key issued by a test CA.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from services.sesam_vitale.models import FseSignature

if TYPE_CHECKING:
    from appliance.config import Settings

ALGORITHM = "RSASSA-PKCS1-v1_5-SHA256"
SIGNER_KEY_FILE = "fse-signer.key"
SIGNER_CERT_FILE = "fse-signer.pem"


class SignerUnavailable(Exception):
    """No signer right now (no CPS card inserted, no key configured); French message."""


class FseSigner(Protocol):
    """Whatever signs FSEs: a CPS card (production) or a software key (tests, demo)."""

    def sign(self, data: bytes) -> FseSignature:
        """The signature of ``data`` with the signer's certificate (raises
        :class:`SignerUnavailable` when the card or key cannot sign now)."""
        ...


def _rpps_of(cert: x509.Certificate) -> str | None:
    """RPPS from the subject: CPS certificates carry ``8`` + RPPS in the CN's serial part or
    in the ``serialNumber`` attribute; a bare 11-digit value is taken as the RPPS."""
    for attribute in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        value = str(attribute.value)
        digits = value[1:] if value.startswith("8") and len(value) == 12 else value
        if len(digits) == 11 and digits.isdigit():
            return digits
    return None


def _name_of(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


class SoftwareKeySigner:
    """An RSA key and its certificate, from PEM bytes."""

    def __init__(self, key_pem: bytes, cert_pem: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the FSE signing key must be an RSA key")
        self._key = key
        self._cert = x509.load_pem_x509_certificate(cert_pem)
        public = self._cert.public_key()
        if (
            not isinstance(public, rsa.RSAPublicKey)
            or public.public_numbers() != key.public_key().public_numbers()
        ):
            raise ValueError("the FSE signing certificate does not match the key")

    @classmethod
    def from_dir(cls, directory: Path) -> SoftwareKeySigner | None:
        """The signer whose files are in ``directory`` (None when they are not there)."""
        key, cert = directory / SIGNER_KEY_FILE, directory / SIGNER_CERT_FILE
        if not (key.is_file() and cert.is_file()):
            return None
        return cls(key.read_bytes(), cert.read_bytes())

    def sign(self, data: bytes) -> FseSignature:
        value = self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return FseSignature(
            algorithm=ALGORITHM,
            value=base64.b64encode(value).decode(),
            certificate_pem=self._cert.public_bytes(serialization.Encoding.PEM).decode(),
            signer_name=_name_of(self._cert),
            signer_rpps=_rpps_of(self._cert),
            signed_at=datetime.now(UTC),
        )


def verify_signature(
    data: bytes, signature: FseSignature, trust_anchors: list[x509.Certificate] | None = None
) -> str | None:
    """Why the signature does not hold (None when it does): the value must verify with the
    certificate's key and, when trust anchors are given, the certificate must be issued by
    one of them and valid now."""
    if signature.algorithm != ALGORITHM:
        return f"unsupported algorithm {signature.algorithm!r}"
    try:
        cert = x509.load_pem_x509_certificate(signature.certificate_pem.encode())
        value = base64.b64decode(signature.value, validate=True)
    except ValueError as exc:
        return f"unreadable certificate or signature ({exc})"
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return "the certificate's key is not RSA"
    try:
        key.verify(value, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "the signature does not match the FSE"
    now = datetime.now(UTC)
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        return "the certificate is not valid now"
    if trust_anchors is not None:
        for anchor in trust_anchors:
            if anchor.subject != cert.issuer:
                continue
            anchor_key = anchor.public_key()
            try:
                if isinstance(anchor_key, rsa.RSAPublicKey):
                    assert cert.signature_hash_algorithm is not None
                    anchor_key.verify(
                        cert.signature,
                        cert.tbs_certificate_bytes,
                        padding.PKCS1v15(),
                        cert.signature_hash_algorithm,
                    )
                elif isinstance(anchor_key, ec.EllipticCurvePublicKey):
                    assert cert.signature_hash_algorithm is not None
                    anchor_key.verify(
                        cert.signature,
                        cert.tbs_certificate_bytes,
                        ec.ECDSA(cert.signature_hash_algorithm),
                    )
                else:
                    continue
            except InvalidSignature:
                continue
            return None
        return "the certificate is not issued by a trusted authority"
    return None


class CpsFseSigner:
    """The production signer: the pharmacist's CPS card, through the cards service.

    The PIN is verified by the card itself (three wrong PINs block it), then the card signs
    the SHA-256 digest of the FSE bytes (RSA PKCS#1 v1.5). Every card failure becomes
    :class:`SignerUnavailable` carrying the card's French message (« Code PIN incorrect : il
    reste N essais », carte retirée...).
    """

    def __init__(self, settings: Settings, pin: str, reader: str | None = None) -> None:
        self._settings = settings
        self._pin = pin
        self._reader = reader

    def sign(self, data: bytes) -> FseSignature:
        from drivers.cps_vitale import CardError
        from services.cards import open_signer

        try:
            with open_signer(self._settings, self._reader) as cps:
                certificate = cps.certificate()
                holder = cps.holder()
                cps.verify_pin(self._pin)
                value = cps.sign(hashlib.sha256(data).digest())
        except CardError as exc:
            raise SignerUnavailable(exc.message) from exc
        return FseSignature(
            algorithm=ALGORITHM,
            value=base64.b64encode(value).decode(),
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            signer_name=f"{holder.first_name} {holder.surname}".strip(),
            signer_rpps=holder.rpps,
            signed_at=datetime.now(UTC),
        )
