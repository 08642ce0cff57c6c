"""ISO 7816-4 command building, status words and BER-TLV parsing: pure functions, no I/O.

Kept apart from the PC/SC transport so that the card dialogues (Vitale, CPS) and the virtual
cards share one encoding and can be tested without a reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from drivers.cps_vitale.errors import InvalidCardData

SW_OK = 0x9000


@dataclass(frozen=True)
class Response:
    """A card answer: data bytes and the two status bytes."""

    data: bytes
    sw1: int
    sw2: int

    @property
    def sw(self) -> int:
        return (self.sw1 << 8) | self.sw2

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    @classmethod
    def parse(cls, raw: bytes) -> Response:
        if len(raw) < 2:
            raise InvalidCardData(detail=f"answer of {len(raw)} byte(s), no status word")
        return cls(bytes(raw[:-2]), raw[-2], raw[-1])


def command(
    cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None
) -> bytes:
    """A short APDU (case 1 to 4); ``le`` 256 is encoded as ``00``."""
    if len(data) > 255:
        raise ValueError("short APDUs carry at most 255 data bytes")
    if le is not None and not 0 <= le <= 256:
        raise ValueError("Le must be between 0 and 256")
    out = bytes([cla, ins, p1, p2])
    if data:
        out += bytes([len(data)]) + data
    if le is not None:
        out += bytes([le % 256])
    return out


def select_mf() -> bytes:
    return command(0x00, 0xA4, 0x00, 0x00, bytes.fromhex("3F00"))


def select_aid(aid: bytes) -> bytes:
    return command(0x00, 0xA4, 0x04, 0x00, aid, le=256)


def select_ef(fid: bytes) -> bytes:
    """SELECT an elementary file under the current DF, no answer data requested."""
    return command(0x00, 0xA4, 0x02, 0x0C, fid)


def read_binary(offset: int, length: int) -> bytes:
    if not 0 <= offset <= 0x7FFF:
        raise ValueError("READ BINARY offset out of range (15 bits)")
    return command(0x00, 0xB0, offset >> 8, offset & 0xFF, le=length)


def get_response(length: int) -> bytes:
    return command(0x00, 0xC0, 0x00, 0x00, le=length or 256)


def verify(reference: int, pin: bytes | None) -> bytes:
    """VERIFY; without a PIN it only asks how many tries are left (``63Cx``)."""
    return command(0x00, 0x20, 0x00, reference, pin or b"")


def manage_security_environment(key_reference: int, algorithm: int) -> bytes:
    """MSE SET for a digital signature template (tag B6): which key, which algorithm."""
    data = bytes([0x84, 0x01, key_reference, 0x80, 0x01, algorithm])
    return command(0x00, 0x22, 0x41, 0xB6, data)


def pso_compute_signature(payload: bytes) -> bytes:
    """PSO COMPUTE DIGITAL SIGNATURE over a DigestInfo (the card pads and signs)."""
    return command(0x00, 0x2A, 0x9E, 0x9A, payload, le=256)


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes

    def children(self) -> list[Tlv]:
        return list(parse_tlv(self.value))


def parse_tlv(data: bytes) -> Iterator[Tlv]:
    """BER-TLV objects in ``data`` (one- or two-byte tags, definite lengths up to 3 bytes).

    ``00`` and ``FF`` bytes between objects are padding (erased file space) and are skipped.
    """
    i, n = 0, len(data)
    while i < n:
        if data[i] in (0x00, 0xFF):
            i += 1
            continue
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            if i >= n:
                raise InvalidCardData(detail="truncated TLV tag")
            tag = (tag << 8) | data[i]
            i += 1
        if i >= n:
            raise InvalidCardData(detail="TLV without length")
        length = data[i]
        i += 1
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 3 or i + count > n:
                raise InvalidCardData(detail="bad TLV length")
            length = int.from_bytes(data[i : i + count], "big")
            i += count
        if i + length > n:
            raise InvalidCardData(detail=f"TLV {tag:02X} runs past the data")
        yield Tlv(tag, bytes(data[i : i + length]))
        i += length


def encode_tlv(tag: int, value: bytes) -> bytes:
    """One BER-TLV object (used by the virtual cards and tests)."""
    tag_bytes = tag.to_bytes(2 if tag > 0xFF else 1, "big")
    length = len(value)
    if length < 0x80:
        head = bytes([length])
    elif length <= 0xFF:
        head = bytes([0x81, length])
    else:
        head = bytes([0x82]) + length.to_bytes(2, "big")
    return tag_bytes + head + value


# DigestInfo prefixes (RFC 8017 section 9.2, note 1): what the card signs for RSA PKCS#1 v1.5.
DIGEST_INFO_PREFIX: dict[str, bytes] = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
DIGEST_SIZE = {"sha256": 32, "sha384": 48, "sha512": 64}


def digest_info(digest: bytes, algorithm: str = "sha256") -> bytes:
    if algorithm not in DIGEST_INFO_PREFIX:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    if len(digest) != DIGEST_SIZE[algorithm]:
        raise ValueError(f"a {algorithm} digest is {DIGEST_SIZE[algorithm]} bytes")
    return DIGEST_INFO_PREFIX[algorithm] + digest
