"""CPS cards (CPS3/CPS4, IAS-ECC application): public identity, PIN, signature.

Two ways to the same :class:`CpsSigner` contract, used by login, billing (FSE) and
document signing:

* :class:`CpsSession`, APDUs through pcscd: SELECT the IAS application, READ BINARY of the
  authentication certificate (public, no PIN), VERIFY (three tries, ``63Cx`` gives the tries
  left, ``6983`` blocked), MSE SET then PSO COMPUTE DIGITAL SIGNATURE over a DigestInfo;
* :class:`Pkcs11CpsSession`, the ANS Cryptolib CPS through PKCS#11, when its module path is
  configured (``cards_pkcs11_module``): the supported path for real cards in production.

The AID default (``E8 28 BD 08 0F 80 25 00 00 01 FF 00 10``) is the CPS3 contact AID of the
public OpenSC-based ``cps3`` driver (card-cps.c). The certificate file id and PIN reference
are those of Hygie's virtual CPS: the values of real cards are not in public material we
could check, so they are settings (``cards_cps_cert_fid``, ``cards_cps_pin_reference``).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from drivers.cps_vitale.apdu import (
    Response,
    digest_info,
    manage_security_environment,
    pso_compute_signature,
    read_binary,
    select_aid,
    select_ef,
    verify,
)
from drivers.cps_vitale.errors import (
    CardCommandFailed,
    InvalidCardData,
    InvalidPin,
    PinBlocked,
    PinRequired,
    Pkcs11Unavailable,
    WrongPin,
)
from drivers.cps_vitale.pcsc import CardChannel

CPS_AID = bytes.fromhex("E828BD080F8025000001FF0010")
CPS_CERT_FID = bytes.fromhex("D001")
CPS_PIN_REFERENCE = 0x81
CPS_SIGN_KEY_REFERENCE = 0x82
ALGO_RSA_PKCS1 = 0x02
MAX_CERT_BYTES = 8192
_PIN = re.compile(r"^[0-9]{4,8}$")


@dataclass(frozen=True)
class CpsHolder:
    """The professional named by the card's certificate."""

    surname: str
    first_name: str
    rpps: str | None
    adeli: str | None
    profession: str
    national_id: str

    def as_json(self) -> dict[str, str | None]:
        return {
            "surname": self.surname,
            "first_name": self.first_name,
            "rpps": self.rpps,
            "adeli": self.adeli,
            "profession": self.profession,
            "national_id": self.national_id,
        }


@dataclass(frozen=True)
class CpsCard:
    reader: str
    atr: str
    protocol: str
    holder: CpsHolder
    certificate_sha256: str
    not_after: str
    pin_tries_left: int | None
    apdus: int = 0
    ms: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "type": "cps",
            "reader": self.reader,
            "atr": self.atr,
            "protocol": self.protocol,
            "holder": self.holder.as_json(),
            "certificate_sha256": self.certificate_sha256,
            "not_after": self.not_after,
            "pin_tries_left": self.pin_tries_left,
            "apdus": self.apdus,
            "ms": self.ms,
        }


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value).strip() if values else ""


def holder_from_certificate(certificate: x509.Certificate) -> CpsHolder:
    """Name, national id and profession from the subject of a CPS certificate.

    The national id (« identifiant national ») is ``8`` + RPPS (11 digits) or ``0`` + ADELI
    (9 digits, then a key), found in ``serialNumber`` or before the ``/`` of the CN; the
    profession in ``title``. (IGC-Santé subject layout as the virtual CPS writes it; real
    certificates are read through the same fields.)
    """
    subject = certificate.subject
    candidates = [
        _attribute(subject, NameOID.SERIAL_NUMBER),
        _attribute(subject, NameOID.COMMON_NAME).split("/")[0],
    ]
    national = next((c for c in candidates if re.fullmatch(r"[0-9]{10,12}", c)), "")
    if not national:
        raise InvalidCardData(detail="no national professional id in the certificate")
    rpps = national[1:] if national[0] == "8" and len(national) == 12 else None
    adeli = national[1:] if national[0] == "0" else None
    surname = _attribute(subject, NameOID.SURNAME)
    first = _attribute(subject, NameOID.GIVEN_NAME)
    if not surname:
        raise InvalidCardData(detail="no surname in the certificate")
    return CpsHolder(
        surname=surname,
        first_name=first,
        rpps=rpps,
        adeli=adeli,
        profession=_attribute(subject, NameOID.TITLE),
        national_id=national,
    )


def check_pin_format(pin: str) -> bytes:
    if not _PIN.fullmatch(pin):
        raise InvalidPin()
    return pin.encode("ascii")


class CpsSigner(Protocol):
    """What billing and document signing use; both sessions below provide it."""

    def certificate(self) -> x509.Certificate:
        """The holder's certificate (public, readable without PIN)."""

    def holder(self) -> CpsHolder: ...

    def verify_pin(self, pin: str) -> None:
        """Raises WrongPin (with ``tries_left``), PinBlocked or InvalidPin."""

    def sign(self, digest: bytes, algorithm: str = "sha256") -> bytes:
        """RSA PKCS#1 v1.5 signature of a ``digest`` (raises PinRequired first)."""


def _check(response: Response, what: str) -> None:
    if not response.ok:
        raise CardCommandFailed(
            f"La carte CPS a refusé la commande {what} (code {response.sw:04X}).",
            detail=f"{what}: SW {response.sw:04X}",
        )


def pin_outcome(response: Response) -> int | None:
    """Tries left after a VERIFY answer, None when verified; raises when blocked."""
    if response.ok:
        return None
    if response.sw in (0x6983, 0x63C0):
        raise PinBlocked(detail=f"VERIFY: SW {response.sw:04X}")
    if response.sw1 == 0x63 and response.sw2 & 0xF0 == 0xC0:
        return response.sw2 & 0x0F
    _check(response, "VERIFY")
    return None  # pragma: no cover - _check raised


class CpsSession:
    """An open CPS in a reader (APDUs through pcscd). Not thread-safe: one user at a time."""

    def __init__(
        self,
        channel: CardChannel,
        *,
        aid: bytes = CPS_AID,
        cert_fid: bytes = CPS_CERT_FID,
        pin_reference: int = CPS_PIN_REFERENCE,
        key_reference: int = CPS_SIGN_KEY_REFERENCE,
    ) -> None:
        self.channel = channel
        self.aid = aid
        self.cert_fid = cert_fid
        self.pin_reference = pin_reference
        self.key_reference = key_reference
        self._certificate: x509.Certificate | None = None
        self.verified = False

    @property
    def reader(self) -> str:
        return self.channel.reader

    def select(self) -> bool:
        """SELECT the IAS application; False when this card has none (not a CPS)."""
        return self.channel.transmit(select_aid(self.aid)).ok

    def certificate(self) -> x509.Certificate:
        if self._certificate is None:
            self.channel.renew()
            _check(self.channel.transmit(select_aid(self.aid)), "SELECT IAS")
            _check(self.channel.transmit(select_ef(self.cert_fid)), "SELECT certificat")
            data = bytearray()
            while len(data) < MAX_CERT_BYTES:
                response = self.channel.transmit(read_binary(len(data), 256))
                if response.sw in (0x6B00, 0x6282) and data:
                    data += response.data
                    break
                _check(response, "READ BINARY")
                data += response.data
                if len(response.data) < 256:
                    break
            try:
                self._certificate = x509.load_der_x509_certificate(bytes(data))
            except ValueError as exc:
                raise InvalidCardData(detail=f"certificate: {exc}") from exc
        return self._certificate

    def holder(self) -> CpsHolder:
        return holder_from_certificate(self.certificate())

    def pin_tries_left(self) -> int | None:
        """Tries left before blocking (VERIFY without data), None once verified."""
        self.channel.renew()
        try:
            return pin_outcome(self.channel.transmit(verify(self.pin_reference, None)))
        except PinBlocked:
            return 0

    def verify_pin(self, pin: str) -> None:
        encoded = check_pin_format(pin)
        self.channel.renew()
        tries = pin_outcome(self.channel.transmit(verify(self.pin_reference, encoded)))
        if tries is not None:
            self.verified = False
            if tries == 0:
                raise PinBlocked()
            raise WrongPin(tries)
        self.verified = True

    def sign(self, digest: bytes, algorithm: str = "sha256") -> bytes:
        if not self.verified:
            raise PinRequired()
        payload = digest_info(digest, algorithm)
        self.channel.renew()
        _check(
            self.channel.transmit(manage_security_environment(self.key_reference, ALGO_RSA_PKCS1)),
            "MSE SET",
        )
        response = self.channel.transmit(pso_compute_signature(payload))
        if response.sw == 0x6982:
            self.verified = False
            raise PinRequired(detail="PSO CDS: SW 6982")
        _check(response, "PSO COMPUTE DIGITAL SIGNATURE")
        return response.data

    def describe(self) -> CpsCard:
        certificate = self.certificate()
        return CpsCard(
            reader=self.channel.reader,
            atr=self.channel.atr.hex().upper(),
            protocol=self.channel.protocol_name,
            holder=holder_from_certificate(certificate),
            certificate_sha256=hashlib.sha256(
                certificate.tbs_certificate_bytes + certificate.signature
            ).hexdigest(),
            not_after=certificate.not_valid_after_utc.isoformat(),
            pin_tries_left=self.pin_tries_left(),
            apdus=self.channel.apdus,
        )


class Pkcs11CpsSession:
    """The same contract through the ANS Cryptolib CPS (a PKCS#11 module), via python-pkcs11.

    Used when ``cards_pkcs11_module`` names the module (the Cryptolib's, e.g.
    ``libcps3_pkcs11_lux.so``). The certificate is read in a public session; ``verify_pin``
    logs in (the module has the card check the PIN); ``sign`` signs the DigestInfo with
    ``CKM_RSA_PKCS`` using the private key whose ``CKA_ID`` is the certificate's. Tested
    against SoftHSM 2 (tests/test_cards_pkcs11.py), not against the Cryptolib itself.
    """

    def __init__(self, module_path: str, token_label: str | None = None) -> None:
        try:
            import pkcs11
        except ImportError as exc:  # pragma: no cover - a dependency of pyhanko[pkcs11]
            raise Pkcs11Unavailable(detail="python-pkcs11 is not installed") from exc
        self._p11: Any = pkcs11
        try:
            slots = pkcs11.lib(module_path).get_slots(token_present=True)
            tokens = [(slot, slot.get_token()) for slot in slots]
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise Pkcs11Unavailable(detail=f"{module_path}: {exc}") from exc
        if token_label is not None:
            tokens = [(slot, token) for slot, token in tokens if token.label == token_label]
        if not tokens:
            raise Pkcs11Unavailable("Aucune carte CPS n'est présente pour la Cryptolib.")
        self._slot, self._token = tokens[0]
        self._public: Any = self._token.open()
        self._user: Any = None
        self._certificate: x509.Certificate | None = None
        self._certificate_id: bytes | None = None

    @property
    def verified(self) -> bool:
        return self._user is not None

    def certificate(self) -> x509.Certificate:
        if self._certificate is None:
            p11 = self._p11
            found = list(
                self._public.get_objects({p11.Attribute.CLASS: p11.ObjectClass.CERTIFICATE})
            )
            if not found:
                raise InvalidCardData(detail="no certificate object on the token")
            self._certificate = x509.load_der_x509_certificate(bytes(found[0][p11.Attribute.VALUE]))
            try:
                self._certificate_id = bytes(found[0][p11.Attribute.ID])
            except (p11.PKCS11Error, KeyError):
                self._certificate_id = None
        return self._certificate

    def holder(self) -> CpsHolder:
        return holder_from_certificate(self.certificate())

    def _flags(self) -> int:
        return int(self._slot.get_token().flags)

    def verify_pin(self, pin: str) -> None:
        check_pin_format(pin)
        p11 = self._p11
        flags = p11.TokenFlag
        try:
            self._user = self._token.open(user_pin=pin)
        except p11.exceptions.PinLocked as exc:
            raise PinBlocked() from exc
        except p11.exceptions.PinIncorrect as exc:
            state = self._flags()
            if state & flags.USER_PIN_LOCKED:
                raise PinBlocked() from exc
            raise WrongPin(1 if state & flags.USER_PIN_FINAL_TRY else None) from exc
        except p11.PKCS11Error as exc:
            raise Pkcs11Unavailable(detail=repr(exc)) from exc

    def sign(self, digest: bytes, algorithm: str = "sha256") -> bytes:
        if self._user is None:
            raise PinRequired()
        p11 = self._p11
        self.certificate()
        query: dict[Any, Any] = {p11.Attribute.CLASS: p11.ObjectClass.PRIVATE_KEY}
        if self._certificate_id:
            query[p11.Attribute.ID] = self._certificate_id
        keys = list(self._user.get_objects(query))
        if not keys:
            raise InvalidCardData(detail="no private key object on the token")
        payload = digest_info(digest, algorithm)
        try:
            return bytes(keys[0].sign(payload, mechanism=p11.Mechanism.RSA_PKCS))
        except p11.PKCS11Error as exc:
            raise Pkcs11Unavailable(detail=repr(exc)) from exc

    def close(self) -> None:
        for session in (self._user, self._public):
            if session is not None:
                with contextlib.suppress(self._p11.PKCS11Error):
                    session.close()
        self._user = None
