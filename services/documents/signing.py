"""PAdES signature of PDFs and its validation, with pyhanko.

The :class:`DocumentSigner` boundary hides where the key is:

* :class:`Pkcs11Signer` (production): the pharmacist's key never leaves the CPS card; pyhanko
  drives it through the ANS *Cryptolib CPS* PKCS#11 module (path from configuration), and
  the card's PIN is given for each signature, never stored.
* :class:`Pkcs12Signer`: a key and certificate in a PKCS#12 file (tests; a pharmacy without
  a card reader).
* :class:`CardSigner`: the CPS through the cards service's own card access (pcscd APDUs,
  or its Cryptolib path), for a site that configures the card there.

Validation (:func:`verify_pdf`) checks the CMS signature, that the signed byte range still
covers the file, and the certificate path to the given trust roots (the IGC-Santé roots in
production, the test CA in tests). Revocation is checked when the certificates carry
revocation information and fetching is allowed; offline, it soft-fails (stated in the docs).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from asn1crypto.algos import SignedDigestAlgorithm
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.signers.pdf_signer import PdfSignatureMetadata
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

if TYPE_CHECKING:
    from appliance.config import Settings
    from drivers.cps_vitale import CpsSigner

SIGNATURE_FIELD = "SignaturePharmacien"


class SigningError(Exception):
    """The signer could not be opened or refused (wrong PIN, card absent, bad file)."""


class DocumentSigner:
    """Where a signing key lives. ``open()`` yields a ready pyhanko signer (a PKCS#11
    session is opened for one signature and closed right after)."""

    def open(self) -> AbstractContextManager[signers.Signer]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class Pkcs12Signer(DocumentSigner):
    def __init__(self, path: Path, passphrase: bytes | None) -> None:
        self.path = path
        self.passphrase = passphrase

    @contextmanager
    def _open(self) -> Iterator[signers.Signer]:
        if not self.path.is_file():
            raise SigningError(f"fichier PKCS#12 introuvable : {self.path}")
        try:
            signer = signers.SimpleSigner.load_pkcs12(  # type: ignore[no-untyped-call]
                pfx_file=str(self.path), passphrase=self.passphrase
            )
        except Exception as exc:
            raise SigningError("fichier PKCS#12 illisible ou mot de passe faux") from exc
        if signer is None:
            raise SigningError("fichier PKCS#12 illisible ou mot de passe faux")
        yield signer

    def open(self) -> AbstractContextManager[signers.Signer]:
        return self._open()

    def describe(self) -> str:
        return f"pkcs12:{self.path.name}"


class Pkcs11Signer(DocumentSigner):
    """The pharmacist's CPS card through a PKCS#11 module (ANS Cryptolib CPS)."""

    def __init__(
        self,
        module: Path,
        *,
        pin: str | None,
        token_label: str | None = None,
        key_label: str | None = None,
        cert_label: str | None = None,
    ) -> None:
        self.module = module
        self.pin = pin
        self.token_label = token_label
        self.key_label = key_label
        self.cert_label = cert_label

    @contextmanager
    def _open(self) -> Iterator[signers.Signer]:
        from pkcs11 import PKCS11Error
        from pyhanko.config.pkcs11 import TokenCriteria
        from pyhanko.sign.pkcs11 import PKCS11Signer, open_pkcs11_session

        if not self.module.is_file():
            raise SigningError(f"module PKCS#11 introuvable : {self.module}")
        criteria = TokenCriteria(label=self.token_label) if self.token_label else None
        try:
            session = open_pkcs11_session(
                str(self.module), token_criteria=criteria, user_pin=self.pin
            )
        except (PKCS11Error, Exception) as exc:
            raise SigningError(
                f"carte CPS inaccessible ou code PIN refusé ({type(exc).__name__})"
            ) from exc
        try:
            yield PKCS11Signer(
                session,
                cert_label=self.cert_label,
                key_label=self.key_label or self.cert_label,
            )
        finally:
            session.close()

    def open(self) -> AbstractContextManager[signers.Signer]:
        return self._open()

    def describe(self) -> str:
        return f"pkcs11:{self.token_label or 'token'}"


class CardSigner(DocumentSigner):
    """The pharmacist's CPS through the cards service (``services.cards.open_signer``:
    APDUs through pcscd, or its own Cryptolib path when ``cards_pkcs11_module`` is set).

    The card signs a digest (RSA PKCS#1 v1.5); pyhanko builds the CMS around it. The card
    session lives for one signature: PIN verified, certificate read, signed, closed.
    """

    def __init__(self, settings: Settings, *, pin: str | None) -> None:
        self.settings = settings
        self.pin = pin

    @contextmanager
    def _open(self) -> Iterator[signers.Signer]:
        from drivers.cps_vitale import CardError
        from services.cards import open_signer

        if not self.pin:
            raise SigningError("le code PIN de la carte CPS est requis")
        try:
            with open_signer(self.settings) as card:
                card.verify_pin(self.pin)
                yield _CardPyhankoSigner(card)
        except CardError as exc:
            raise SigningError(exc.message) from exc

    def open(self) -> AbstractContextManager[signers.Signer]:
        return self._open()

    def describe(self) -> str:
        return "cps-card"


class _CardPyhankoSigner(signers.Signer):
    """pyhanko's view of a card that signs digests (``CpsSigner`` of drivers.cps_vitale)."""

    def __init__(self, card: CpsSigner) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding

        cert = asn1_x509.Certificate.load(card.certificate().public_bytes(Encoding.DER))
        super().__init__(
            signing_cert=cert,
            cert_registry=SimpleCertificateStore.from_certs([cert]),  # type: ignore[no-untyped-call]
            signature_mechanism=SignedDigestAlgorithm({"algorithm": "sha256_rsa"}),
        )
        self.card = card
        self.size = cert.public_key.bit_size // 8

    async def async_sign_raw(
        self, data: bytes, digest_algorithm: str, dry_run: bool = False
    ) -> bytes:
        if dry_run:  # pyhanko sizes the signature placeholder first
            return bytes(self.size)
        digest = hashlib.new(digest_algorithm, data).digest()
        return self.card.sign(digest, digest_algorithm)


def signer_subject(signer: signers.Signer) -> str:
    cert = signer.signing_cert
    return cert.subject.human_friendly if cert is not None else "inconnu"


def sign_pdf(
    pdf: bytes, signer: DocumentSigner, *, reason: str, location: str | None
) -> tuple[bytes, str]:
    """The PDF with a PAdES B-B signature appended (incremental update), and the signer's
    certificate subject."""
    meta = PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        subfilter=SigSeedSubFilter.PADES,
        md_algorithm="sha256",
        reason=reason,
        location=location,
    )
    with signer.open() as pyhanko_signer:
        try:
            writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
            out = signers.sign_pdf(writer, meta, signer=pyhanko_signer)
        except SigningError:
            raise
        except Exception as exc:
            raise SigningError(f"signature impossible : {type(exc).__name__}: {exc}") from exc
        return out.getvalue(), signer_subject(pyhanko_signer)


def load_trust_roots(path: Path) -> list[asn1_x509.Certificate]:
    data = path.read_bytes()
    if not pem.detect(data):
        return [asn1_x509.Certificate.load(data)]
    return [asn1_x509.Certificate.load(der) for _, _, der in pem.unarmor(data, multiple=True)]


class Verification:
    """What validation says about the (last) signature of a PDF."""

    def __init__(
        self,
        *,
        intact: bool,
        valid: bool,
        trusted: bool,
        signer: str | None,
        signed_at: datetime | None,
        coverage: str,
        summary: str,
    ) -> None:
        self.intact = intact
        self.valid = valid
        self.trusted = trusted
        self.signer = signer
        self.signed_at = signed_at
        self.coverage = coverage
        self.summary = summary


def verify_pdf(data: bytes, trust_roots: list[asn1_x509.Certificate]) -> Verification:
    """Validate the PDF's last signature against ``trust_roots`` (no network fetches)."""
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        embedded = reader.embedded_signatures
    except Exception as exc:
        return Verification(
            intact=False,
            valid=False,
            trusted=False,
            signer=None,
            signed_at=None,
            coverage="none",
            summary=f"PDF illisible : {type(exc).__name__}",
        )
    if not embedded:
        return Verification(
            intact=False,
            valid=False,
            trusted=False,
            signer=None,
            signed_at=None,
            coverage="none",
            summary="le document ne porte aucune signature",
        )
    context = ValidationContext(trust_roots=trust_roots, allow_fetching=False)
    try:
        status = validate_pdf_signature(embedded[-1], context)
    except Exception as exc:
        return Verification(
            intact=False,
            valid=False,
            trusted=False,
            signer=None,
            signed_at=None,
            coverage="unknown",
            summary=f"signature invalide : {type(exc).__name__}",
        )
    coverage = status.coverage.name.lower() if status.coverage is not None else "unknown"
    whole = coverage == "entire_file"
    signer = status.signing_cert.subject.human_friendly if status.signing_cert else None
    intact = bool(status.intact) and whole
    if intact and status.valid and status.trusted:
        summary = "signature valide, document intact, certificat reconnu"
    elif not intact:
        summary = "le document a été modifié après la signature"
    elif not status.trusted:
        summary = "signature intacte mais certificat non reconnu par les autorités de confiance"
    else:
        summary = "signature invalide"
    return Verification(
        intact=intact,
        valid=bool(status.valid) and intact,
        trusted=bool(status.trusted),
        signer=signer,
        signed_at=status.signer_reported_dt,
        coverage=coverage,
        summary=summary,
    )
