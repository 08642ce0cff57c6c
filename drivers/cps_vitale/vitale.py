"""Vitale 2 reading: the publicly documented sequence, and its parsing (pure functions).

1. SELECT MF ``3F00``; READ BINARY of the identity file: one TLV template ``65`` per
   beneficiary (``80`` surname, ``81`` first name, ``82`` birth date ``AAAAMMJJ``).
2. SELECT the VITALE application (AID ``D2 50 00 00 02 56 49 54 41 4C 45``); READ BINARY:
   ``65`` templates with ``93`` the NIR (15 characters: 13 and the key) and ``90`` a code
   whose meaning is not part of the public description (kept raw, as ``quality``).
3. Beneficiaries are matched by order.

A card whose MF holds identity templates but which has no VITALE application is a Vitale 1
card: refused with its own error. Rights, exemptions and AMC data are *not* read here: they
are protected by the certified SESAM-Vitale library (see :mod:`drivers.cps_vitale.sesam`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.cps_vitale.apdu import Response, parse_tlv, read_binary, select_aid, select_mf
from drivers.cps_vitale.errors import CardCommandFailed, InvalidCardData, Vitale1Card
from drivers.cps_vitale.pcsc import CardChannel

VITALE_AID = bytes.fromhex("D250000002564954414C45")
TEMPLATE, SURNAME, FIRST_NAME, BIRTH_DATE = 0x65, 0x80, 0x81, 0x82
QUALITY, NIR = 0x90, 0x93
MAX_FILE_BYTES = 8192
SW_END_OF_FILE = {0x6282, 0x6B00}


@dataclass(frozen=True)
class Beneficiary:
    """One person on the card, as printed in the contract's JSON."""

    surname: str
    first_name: str
    birth_date: str
    """``YYYY-MM-DD`` from the card's ``AAAAMMJJ``. Not checked against the calendar: Vitale
    cards carry « dates de naissance lunaires » (day or month 00 or above 12/31) for some
    people born abroad; :func:`calendar_date` says whether it is a real date."""
    nir: str
    quality: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            "surname": self.surname,
            "first_name": self.first_name,
            "birth_date": self.birth_date,
            "nir": self.nir,
        }


@dataclass(frozen=True)
class VitaleCard:
    reader: str
    atr: str
    protocol: str
    beneficiaries: tuple[Beneficiary, ...]
    apdus: int = 0
    ms: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "type": "vitale",
            "reader": self.reader,
            "atr": self.atr,
            "protocol": self.protocol,
            "beneficiaries": [b.as_json() for b in self.beneficiaries],
            "apdus": self.apdus,
            "ms": self.ms,
        }


def _text(value: bytes) -> str:
    """Card text is 8-bit (ISO 8859-1); trailing spaces and padding are not part of it."""
    return value.decode("latin-1").strip().strip("\x00").strip()


def birth_date_iso(raw: str) -> str:
    if len(raw) != 8 or not raw.isdigit():
        raise InvalidCardData(detail=f"birth date {raw!r} is not AAAAMMJJ")
    return f"{raw[:4]}-{raw[4:6]}-{raw[6:]}"


def parse_identity_file(data: bytes) -> list[tuple[str, str, str]]:
    """(surname, first name, birth date ISO) per ``65`` template, in card order."""
    people = []
    for template in parse_tlv(data):
        if template.tag != TEMPLATE:
            continue
        fields = {child.tag: child.value for child in template.children()}
        if SURNAME not in fields or BIRTH_DATE not in fields:
            raise InvalidCardData(detail="identity template without surname or birth date")
        people.append(
            (
                _text(fields[SURNAME]),
                _text(fields.get(FIRST_NAME, b"")),
                birth_date_iso(_text(fields[BIRTH_DATE])),
            )
        )
    return people


def parse_nir_file(data: bytes) -> list[tuple[str, str]]:
    """(NIR, quality code hex) per ``65`` template, in card order."""
    out = []
    for template in parse_tlv(data):
        if template.tag != TEMPLATE:
            continue
        fields = {child.tag: child.value for child in template.children()}
        nir = _text(fields.get(NIR, b"")).replace(" ", "")
        if len(nir) != 15:
            raise InvalidCardData(detail=f"NIR of {len(nir)} characters, 15 expected")
        out.append((nir, fields.get(QUALITY, b"").hex().upper()))
    return out


def match_beneficiaries(
    identities: list[tuple[str, str, str]], nirs: list[tuple[str, str]]
) -> tuple[Beneficiary, ...]:
    """Pair the two files by order; a count mismatch means a damaged card, never a guess."""
    if not identities:
        raise InvalidCardData(detail="no beneficiary on the card")
    if len(identities) != len(nirs):
        raise InvalidCardData(
            detail=f"{len(identities)} identity templates but {len(nirs)} NIR templates"
        )
    return tuple(
        Beneficiary(surname, first, born, nir, quality)
        for (surname, first, born), (nir, quality) in zip(identities, nirs, strict=True)
    )


def read_file(channel: CardChannel) -> bytes:
    """READ BINARY of the selected file, 256 bytes at a time until its end."""
    content = bytearray()
    while len(content) < MAX_FILE_BYTES:
        response = channel.transmit(read_binary(len(content), 256))
        if response.sw in SW_END_OF_FILE and content:
            break
        if response.sw == 0x6282:
            content += response.data
            break
        _check(response, "READ BINARY")
        content += response.data
        if len(response.data) < 256:
            break
    return bytes(content)


def _check(response: Response, what: str) -> None:
    if not response.ok:
        raise CardCommandFailed(
            f"La carte a refusé la commande {what} (code {response.sw:04X}).",
            detail=f"{what}: SW {response.sw:04X}",
        )


def looks_like_vitale(channel: CardChannel) -> list[tuple[str, str, str]] | None:
    """Step 1: the identity file, or None when the MF has no identity templates."""
    if not channel.transmit(select_mf()).ok:
        return None
    response = channel.transmit(read_binary(0, 256))
    if response.sw not in (0x9000, 0x6282):
        return None
    data = bytearray(response.data)
    if len(response.data) == 256:
        while len(data) < MAX_FILE_BYTES:
            more = channel.transmit(read_binary(len(data), 256))
            if not more.ok and more.sw != 0x6282:
                break
            data += more.data
            if len(more.data) < 256 or more.sw == 0x6282:
                break
    try:
        people = parse_identity_file(bytes(data))
    except InvalidCardData:
        return None
    return people or None


def read_vitale(channel: CardChannel, identities: list[tuple[str, str, str]]) -> VitaleCard:
    """Step 2 and 3, once :func:`looks_like_vitale` found the identity file."""
    selected = channel.transmit(select_aid(VITALE_AID))
    if selected.sw in (0x6A82, 0x6A86, 0x6D00, 0x6E00):
        raise Vitale1Card(detail=f"SELECT VITALE: SW {selected.sw:04X}")
    _check(selected, "SELECT VITALE")
    nirs = parse_nir_file(read_file(channel))
    return VitaleCard(
        reader=channel.reader,
        atr=channel.atr.hex().upper(),
        protocol=channel.protocol_name,
        beneficiaries=match_beneficiaries(identities, nirs),
        apdus=channel.apdus,
    )
