"""Virtual Vitale 2 / Vitale 1 and CPS cards answering APDUs like the cards the driver reads.

They hold the same files in the same encoding as :mod:`drivers.cps_vitale.vitale` and
:mod:`drivers.cps_vitale.cps` expect, follow the T=0 rules when their ATR says T=0 (``61xx``
for case-4 answers, ``6Cxx`` for a wrong ``Le``), keep a PIN try counter that survives
removal, and really sign with their key. They are development and test devices, named as
such in their ATR historical bytes (``HYGIE-VIT`` / ``HYGIE-CPS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding

from drivers.cps_vitale.apdu import DIGEST_INFO_PREFIX, encode_tlv
from drivers.cps_vitale.cps import CPS_AID, CPS_CERT_FID, CPS_PIN_REFERENCE
from drivers.cps_vitale.vitale import VITALE_AID

SW_OK = b"\x90\x00"
SW_FILE_NOT_FOUND = b"\x6a\x82"
SW_WRONG_P1P2 = b"\x6b\x00"
SW_INS_NOT_SUPPORTED = b"\x6d\x00"
SW_CONDITIONS = b"\x69\x85"
SW_SECURITY = b"\x69\x82"
SW_BLOCKED = b"\x69\x83"
SW_END_OF_FILE = b"\x62\x82"
SW_NO_EF = b"\x69\x86"


def atr_for(protocol: str, historical: bytes) -> bytes:
    """An ATR offering only ``protocol`` (T=0: no interface bytes; T=1: TD1 and a TCK)."""
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    if protocol == "T=0":
        return bytes([0x3B, len(historical)]) + historical
    body = bytes([0x80 | len(historical), 0x01]) + historical
    tck = 0
    for byte in body:
        tck ^= byte
    return b"\x3b" + body + bytes([tck])


@dataclass
class VirtualCard:
    """The shared behaviour: power, ATR, T=0 chaining, fault injection."""

    protocol: str = "T=0"
    remove_after_apdus: int | None = None
    """Pull the card out instead of answering the APDU that follows this many (tests)."""
    mute: bool = False
    """Powers up but never gives a status word: every APDU gets one stray byte, as a card
    that does not speak ISO 7816 (or a dirty chip) does."""
    delay_s: float = 0.0
    """Wait this long before each answer (a slow or failing card)."""
    answered: int = 0
    powered: bool = False
    _pending: bytes = b""

    historical: bytes = b"HYGIE-CARD"

    def atr_bytes(self) -> bytes:
        return atr_for(self.protocol, self.historical)

    def power_on(self) -> None:
        self.powered = True
        self.on_reset()

    def power_off(self) -> None:
        self.powered = False
        self.on_reset()

    def reset(self) -> None:
        self.on_reset()

    def on_reset(self) -> None:
        self._pending = b""

    def process(self, apdu: bytes) -> bytes:
        self.answered += 1
        if self.mute:
            return b"\x00"
        if len(apdu) < 4:
            return b"\x67\x00"
        if apdu[1] == 0xC0:  # GET RESPONSE
            data, self._pending = self._pending, b""
            if not data:
                return b"\x69\x85"
            wanted = apdu[4] if len(apdu) > 4 else 0
            wanted = wanted or 256
            if wanted < len(data):
                self._pending = data[wanted:]
                more = min(len(self._pending), 256) % 256
                return data[:wanted] + bytes([0x61, more])
            return data + SW_OK
        body, le = _split(apdu)
        data, sw = self.handle(apdu[1], apdu[2], apdu[3], body, le)
        if self.protocol == "T=0" and sw == SW_OK:
            if body and data:
                # T=0 case 4: the answer waits for GET RESPONSE.
                self._pending = data
                return bytes([0x61, len(data) % 256])
            if le is not None and data and le != len(data):
                return bytes([0x6C, len(data) % 256])
        return data + sw

    def handle(
        self, ins: int, p1: int, p2: int, body: bytes, le: int | None
    ) -> tuple[bytes, bytes]:
        raise NotImplementedError


def _split(apdu: bytes) -> tuple[bytes, int | None]:
    """Command data and Le of a short APDU (``Le`` 0 means 256)."""
    rest = apdu[4:]
    if not rest:
        return b"", None
    if len(rest) == 1:
        return b"", rest[0] or 256
    lc = rest[0]
    body = rest[1 : 1 + lc]
    tail = rest[1 + lc :]
    return body, ((tail[0] or 256) if tail else None)


def _read(content: bytes, p1: int, p2: int, le: int | None) -> tuple[bytes, bytes]:
    offset = (p1 << 8) | p2
    if offset > len(content) or (offset == len(content) and content):
        return b"", SW_WRONG_P1P2
    chunk = content[offset : offset + (le or 256)]
    if le is not None and len(chunk) < le and le != 256:
        return chunk, SW_END_OF_FILE
    return chunk, SW_OK


@dataclass(frozen=True)
class VitaleBeneficiaryData:
    surname: str
    first_name: str
    birth_date: str  # AAAAMMJJ as the card holds it
    nir: str
    quality: str = "00"


@dataclass
class VirtualVitale(VirtualCard):
    """A Vitale card: identity file under the MF, NIR file in the VITALE application.

    ``generation`` 1 has no VITALE application (its SELECT answers ``6A82``).
    """

    beneficiaries: list[VitaleBeneficiaryData] = field(default_factory=list)
    generation: int = 2
    historical: bytes = b"HYGIE-VIT2"
    selected: str = ""

    def on_reset(self) -> None:
        super().on_reset()
        self.selected = ""

    def identity_file(self) -> bytes:
        return b"".join(
            encode_tlv(
                0x65,
                encode_tlv(0x80, b.surname.encode("latin-1"))
                + encode_tlv(0x81, b.first_name.encode("latin-1"))
                + encode_tlv(0x82, b.birth_date.encode("ascii")),
            )
            for b in self.beneficiaries
        )

    def nir_file(self) -> bytes:
        return b"".join(
            encode_tlv(
                0x65,
                encode_tlv(0x90, bytes.fromhex(b.quality)) + encode_tlv(0x93, b.nir.encode()),
            )
            for b in self.beneficiaries
        )

    def handle(
        self, ins: int, p1: int, p2: int, body: bytes, le: int | None
    ) -> tuple[bytes, bytes]:
        if ins == 0xA4:
            if p1 == 0x00 and body == b"\x3f\x00":
                self.selected = "mf"
                return b"", SW_OK
            if p1 == 0x04 and body == VITALE_AID and self.generation >= 2:
                self.selected = "vitale"
                return encode_tlv(0x6F, encode_tlv(0x84, VITALE_AID)), SW_OK
            return b"", SW_FILE_NOT_FOUND
        if ins == 0xB0:
            if self.selected == "mf":
                return _read(self.identity_file(), p1, p2, le)
            if self.selected == "vitale":
                return _read(self.nir_file(), p1, p2, le)
            return b"", SW_NO_EF
        return b"", SW_INS_NOT_SUPPORTED


@dataclass
class VirtualCps(VirtualCard):
    """A CPS (IAS-ECC application): certificate readable without PIN, PIN with three tries,
    PSO COMPUTE DIGITAL SIGNATURE with the card's RSA key once the PIN is verified."""

    certificate: x509.Certificate | None = None
    key: rsa.RSAPrivateKey | None = None
    pin: str = "1234"
    max_tries: int = 3
    tries_left: int = 3
    protocol: str = "T=1"
    historical: bytes = b"HYGIE-CPS4"
    selected: str = ""
    verified: bool = False
    security_environment: bool = False

    def on_reset(self) -> None:
        super().on_reset()
        self.selected = ""
        self.verified = False
        self.security_environment = False

    def handle(
        self, ins: int, p1: int, p2: int, body: bytes, le: int | None
    ) -> tuple[bytes, bytes]:
        if ins == 0xA4:
            if p1 == 0x04 and body == CPS_AID:
                self.selected = "app"
                return encode_tlv(0x6F, encode_tlv(0x84, CPS_AID)), SW_OK
            if p1 == 0x00 and body == b"\x3f\x00":
                self.selected = "mf"
                return b"", SW_OK
            if p1 == 0x02 and body == CPS_CERT_FID and self.selected in ("app", "cert"):
                self.selected = "cert"
                return b"", SW_OK
            return b"", SW_FILE_NOT_FOUND
        if ins == 0xB0:
            if self.selected != "cert" or self.certificate is None:
                return b"", SW_NO_EF
            return _read(self.certificate.public_bytes(Encoding.DER), p1, p2, le)
        if ins == 0x20 and p2 == CPS_PIN_REFERENCE:
            return self._verify(body)
        if ins == 0x22 and p1 == 0x41 and p2 == 0xB6:
            self.security_environment = True
            return b"", SW_OK
        if ins == 0x2A and p1 == 0x9E and p2 == 0x9A:
            return self._sign(body)
        return b"", SW_INS_NOT_SUPPORTED

    def _verify(self, body: bytes) -> tuple[bytes, bytes]:
        if self.tries_left == 0:
            return b"", SW_BLOCKED
        if not body:
            if self.verified:
                return b"", SW_OK
            return b"", bytes([0x63, 0xC0 | self.tries_left])
        if body == self.pin.encode("ascii"):
            self.tries_left = self.max_tries
            self.verified = True
            return b"", SW_OK
        self.tries_left -= 1
        self.verified = False
        if self.tries_left == 0:
            return b"", SW_BLOCKED
        return b"", bytes([0x63, 0xC0 | self.tries_left])

    def _sign(self, body: bytes) -> tuple[bytes, bytes]:
        if not self.verified:
            return b"", SW_SECURITY
        if not self.security_environment or self.key is None:
            return b"", SW_CONDITIONS
        algorithms = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}
        algorithms["sha512"] = hashes.SHA512()
        for name, prefix in DIGEST_INFO_PREFIX.items():
            if body.startswith(prefix):
                digest = body[len(prefix) :]
                signature = self.key.sign(digest, padding.PKCS1v15(), Prehashed(algorithms[name]))
                return signature, SW_OK
        return b"", b"\x6a\x80"
