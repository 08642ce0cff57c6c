"""Parsers of the BDPM files: bytes in, frozen records and rejected lines out (no I/O).

The official files have no header, are tab-separated, come in UTF-8 or Windows-1252 (older
editions), sometimes end lines with spare tabs, write dates as DD/MM/YYYY and prices with a
comma (``1,394,44`` for 1 394,44 €). A line with missing fields means a damaged file and
stops the whole import; a line with a bad value is rejected and reported, the rest loads.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from services.medications.models import (
    Availability,
    BdpmData,
    Component,
    Condition,
    FileReport,
    GenericMembership,
    MitmEntry,
    Presentation,
    RejectedLine,
    Speciality,
)

CIS_RE = re.compile(r"^\d{8}$")
CIP7_RE = re.compile(r"^\d{7}$")
CIP13_RE = re.compile(r"^\d{13}$")
ATC_RE = re.compile(r"^[A-Z](\d\d([A-Z]([A-Z](\d\d)?)?)?)?$")
MAX_REJECTED_SHARE = 0.02
"""Above this share of rejected lines in one file, the file is treated as damaged."""


class BdpmFileError(Exception):
    """A file cannot be imported at all (missing, empty, wrong encoding, wrong columns)."""


class LineError(Exception):
    """One value of one line is not valid; the line is rejected with this reason."""


def decode(raw: bytes, name: str) -> tuple[str, str]:
    """Text and encoding of a BDPM file: UTF-8 when it decodes, else Windows-1252.

    A UTF-8 file never fails to decode as such, and Windows-1252 text with accents almost
    never passes as UTF-8, so trying UTF-8 first is a reliable detection. NUL bytes mean
    UTF-16 or a binary file, which neither reading would reveal.
    """
    if not raw.strip():
        raise BdpmFileError(f"{name}: the file is empty")
    if b"\x00" in raw:
        raise BdpmFileError(
            f"{name}: wrong encoding: contains NUL bytes (UTF-16 or binary?); "
            "expected UTF-8 or Windows-1252 text"
        )
    try:
        return raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "windows-1252"
    except UnicodeDecodeError as exc:
        raise BdpmFileError(
            f"{name}: wrong encoding: byte 0x{raw[exc.start]:02x} at offset {exc.start} is "
            "neither UTF-8 nor Windows-1252"
        ) from exc


def parse_date(value: str) -> date | None:
    text = value.strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d{2})/(\d{2})/(\d{4})", text)
    if match is None:
        raise LineError(f"date '{text}' is not DD/MM/YYYY")
    day, month, year = (int(part) for part in match.groups())
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise LineError(f"date '{text}' does not exist") from exc


def parse_cents(value: str) -> int | None:
    """Euros with a decimal comma, and commas or spaces as thousands separators."""
    text = value.strip().replace(" ", "").replace("\u00a0", "").replace("€", "")
    if not text:
        return None
    if "," in text:
        head, _, tail = text.rpartition(",")
        text = head.replace(",", "").replace(".", "") + "." + tail
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise LineError(f"price '{value.strip()}' is not a number") from exc
    if amount < 0:
        raise LineError(f"price '{value.strip()}' is negative")
    return int((amount * 100).to_integral_value())


def parse_rate(value: str) -> int | None:
    """``65%``, ``65 %`` or empty; a rate outside 0..100 rejects the line."""
    text = value.strip().replace(" ", "")
    if not text:
        return None
    match = re.match(r"^(\d{1,3})(?:[.,]\d+)?%?", text)
    if match is None or int(match.group(1)) > 100:
        raise LineError(f"reimbursement rate '{value.strip()}' is not a percentage")
    return int(match.group(1))


def _cis(value: str) -> str:
    text = value.strip()
    if not CIS_RE.match(text):
        raise LineError(f"CIS '{text[:20]}' is not 8 digits")
    return text


def _int_or_none(value: str, what: str) -> int | None:
    text = value.strip()
    if not text:
        return None
    if not text.isdigit():
        raise LineError(f"{what} '{text[:20]}' is not a number")
    return int(text)


def _yes_no(value: str) -> bool | None:
    text = value.strip().lower()
    return True if text == "oui" else False if text == "non" else None


def _speciality(f: list[str]) -> Speciality:
    marketing = f[6].strip()
    if marketing not in {"Commercialisée", "Non commercialisée"}:
        raise LineError(f"marketing status '{marketing[:40]}' is unknown")
    return Speciality(
        cis=_cis(f[0]),
        name=f[1].strip(),
        form=f[2].strip(),
        routes=tuple(r.strip() for r in f[3].split(";") if r.strip()),
        amm_status=f[4].strip(),
        amm_procedure=f[5].strip(),
        marketed=marketing == "Commercialisée",
        amm_date=parse_date(f[7]),
        bdm_status=f[8].strip(),
        eu_number=f[9].strip(),
        holders=f[10].strip(),
        reinforced_monitoring=(f[11].strip().lower() == "oui") if len(f) > 11 else False,
    )


def _presentation(f: list[str]) -> Presentation:
    cip7, cip13 = f[1].strip(), f[6].strip()
    if not CIP7_RE.match(cip7):
        raise LineError(f"CIP7 '{cip7[:20]}' is not 7 digits")
    if not CIP13_RE.match(cip13):
        raise LineError(f"CIP13 '{cip13[:20]}' is not 13 digits")
    status = f[4].strip()
    return Presentation(
        cis=_cis(f[0]),
        cip7=cip7,
        cip13=cip13,
        label=f[2].strip(),
        admin_status=f[3].strip(),
        marketing_status=status,
        marketed=status == "Déclaration de commercialisation",
        marketing_date=parse_date(f[5]),
        collectivities=_yes_no(f[7]),
        reimbursement_rate=parse_rate(f[8]),
        price_cents=parse_cents(f[9]),
        price_with_fees_cents=parse_cents(f[10]),
        fees_cents=parse_cents(f[11]),
        reimbursement_text=f[12].strip() if len(f) > 12 else "",
    )


def _component(f: list[str]) -> Component:
    nature = f[6].strip()
    if nature not in {"SA", "FT"}:
        raise LineError(f"component nature '{nature[:10]}' is neither SA nor FT")
    code = f[2].strip()
    if not code.isdigit():
        raise LineError(f"substance code '{code[:20]}' is not a number")
    return Component(
        cis=_cis(f[0]),
        element=f[1].strip(),
        substance_code=code,
        substance_name=f[3].strip(),
        dosage=f[4].strip(),
        dosage_ref=f[5].strip(),
        nature=nature,
        link_no=_int_or_none(f[7], "link number"),
    )


def _generic(f: list[str]) -> GenericMembership:
    group = _int_or_none(f[0], "generic group")
    kind = _int_or_none(f[3], "generic type")
    if group is None or kind is None:
        raise LineError("generic group or type is empty")
    return GenericMembership(
        group_id=group,
        label=f[1].strip(),
        cis=_cis(f[2]),
        kind=kind,
        sort_no=_int_or_none(f[4], "sort number"),
    )


def _condition(f: list[str]) -> Condition:
    return Condition(cis=_cis(f[0]), text=f[1].strip())


def _availability(f: list[str]) -> Availability:
    cip13 = f[1].strip() or None
    if cip13 is not None and not CIP13_RE.match(cip13):
        raise LineError(f"CIP13 '{cip13[:20]}' is not 13 digits")
    code = _int_or_none(f[2], "supply status code")
    if code is None:
        raise LineError("supply status code is empty")
    return Availability(
        cis=_cis(f[0]),
        cip13=cip13,
        status_code=code,
        status_label=f[3].strip(),
        start_date=parse_date(f[4]),
        updated_date=parse_date(f[5]),
        end_date=parse_date(f[6]),
        link=f[7].strip() if len(f) > 7 else "",
    )


def _mitm(f: list[str]) -> MitmEntry:
    atc = f[1].strip().upper()
    if not ATC_RE.match(atc):
        raise LineError(f"ATC code '{atc[:10]}' is not valid")
    return MitmEntry(cis=_cis(f[0]), atc=atc, name=f[2].strip())


@dataclass(frozen=True)
class FileSpec:
    """One BDPM file: its name stem, its columns, how many are required, its line parser."""

    stem: str
    columns: int
    required: int
    parse: Callable[[list[str]], Any]


FILES: tuple[FileSpec, ...] = (
    FileSpec("CIS_bdpm", 12, 12, _speciality),
    FileSpec("CIS_CIP_bdpm", 13, 12, _presentation),
    FileSpec("CIS_COMPO_bdpm", 8, 8, _component),
    FileSpec("CIS_GENER_bdpm", 5, 5, _generic),
    FileSpec("CIS_CPD_bdpm", 2, 2, _condition),
    FileSpec("CIS_CIP_Dispo_Spec", 8, 7, _availability),
    FileSpec("CIS_MITM", 4, 2, _mitm),
)
SPECS = {spec.stem: spec for spec in FILES}


def _lines(text: str) -> Iterator[tuple[int, str]]:
    pieces = text.split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()
    for number, line in enumerate(pieces, start=1):
        yield number, line.rstrip("\r")


def _excerpt(line: str) -> str:
    return line[:120].replace("\t", " | ")


def parse_file(
    spec: FileSpec, raw: bytes, name: str | None = None
) -> tuple[list[tuple[int, Any]], FileReport]:
    """Parse one file into (line number, record) pairs; raise if it is damaged as a whole."""
    name = name or f"{spec.stem}.txt"
    text, encoding = decode(raw, name)
    records: list[tuple[int, Any]] = []
    rejected: list[RejectedLine] = []
    blank = lines = 0
    for number, line in _lines(text):
        if not line.strip():
            blank += 1
            continue
        lines += 1
        fields = line.split("\t")
        while len(fields) > spec.columns and not fields[-1].strip():
            fields.pop()
        if len(fields) < spec.required:
            raise BdpmFileError(
                f"{name} line {number}: {len(fields)} fields, expected {spec.columns} "
                "(truncated line, missing column or not a BDPM file); nothing was imported"
            )
        if len(fields) > spec.columns:
            raise BdpmFileError(
                f"{name} line {number}: {len(fields)} fields, expected {spec.columns} "
                "(extra column: the format may have changed); nothing was imported"
            )
        try:
            records.append((number, spec.parse(fields)))
        except LineError as exc:
            rejected.append(
                RejectedLine(file=name, line_no=number, reason=str(exc), excerpt=_excerpt(line))
            )
    if lines == 0:
        raise BdpmFileError(f"{name}: the file has no data line")
    report = FileReport(
        file=name,
        encoding=encoding,
        lines=lines,
        loaded=len(records),
        blank=blank,
        rejected=tuple(rejected),
    )
    return records, report


def _check_share(report: FileReport) -> None:
    if len(report.rejected) > max(1, MAX_REJECTED_SHARE * report.lines):
        first = report.rejected[0]
        raise BdpmFileError(
            f"{report.file}: {len(report.rejected)} of {report.lines} lines rejected (first: "
            f"line {first.line_no}, {first.reason}); the file looks damaged, nothing was imported"
        )


def _reject_unknown(
    records: list[tuple[int, Any]], report: FileReport, known: set[str]
) -> tuple[list[Any], FileReport]:
    """Drop records about a CIS that CIS_bdpm does not list (they could not be shown)."""
    kept: list[Any] = []
    rejected = list(report.rejected)
    for number, record in records:
        if record.cis in known:
            kept.append(record)
        else:
            rejected.append(
                RejectedLine(
                    file=report.file,
                    line_no=number,
                    reason=f"CIS {record.cis} is not in CIS_bdpm",
                    excerpt="",
                )
            )
    rejected.sort(key=lambda item: item.line_no)
    return kept, FileReport(
        file=report.file,
        encoding=report.encoding,
        lines=report.lines,
        loaded=len(kept),
        blank=report.blank,
        rejected=tuple(rejected),
    )


def parse_folder(files: Mapping[str, bytes]) -> BdpmData:
    """Parse the seven files (keyed by stem) into one consistent, checked data set.

    Every file is read before anything is returned, so a damaged last file stops the
    import before the database is touched.
    """
    missing = [spec.stem for spec in FILES if spec.stem not in files]
    if missing:
        raise BdpmFileError(f"missing file(s): {', '.join(s + '.txt' for s in missing)}")
    parsed: dict[str, tuple[list[tuple[int, Any]], FileReport]] = {}
    for spec in FILES:
        records, report = parse_file(spec, files[spec.stem])
        _check_share(report)
        parsed[spec.stem] = (records, report)
    specialities: list[Speciality] = []
    seen: set[str] = set()
    spec_records, spec_report = parsed["CIS_bdpm"]
    duplicates: list[RejectedLine] = []
    for number, item in spec_records:
        if item.cis in seen:
            duplicates.append(
                RejectedLine(
                    file=spec_report.file,
                    line_no=number,
                    reason=f"CIS {item.cis} already listed",
                    excerpt=item.name[:120],
                )
            )
            continue
        seen.add(item.cis)
        specialities.append(item)
    if duplicates:
        spec_report = msgspec.structs.replace(
            spec_report,
            loaded=len(specialities),
            rejected=tuple(sorted((*spec_report.rejected, *duplicates), key=lambda r: r.line_no)),
        )
        _check_share(spec_report)
    known = seen
    final: dict[str, tuple[list[Any], FileReport]] = {"CIS_bdpm": (specialities, spec_report)}
    for spec in FILES[1:]:
        records, report = parsed[spec.stem]
        # Not a sign of damage: generic groups keep specialities withdrawn since.
        kept, checked = _reject_unknown(records, report, known)
        final[spec.stem] = (kept, checked)
    presentations = _unique(final["CIS_CIP_bdpm"][0], lambda p: p.cip13)
    return BdpmData(
        specialities=tuple(specialities),
        presentations=tuple(presentations),
        components=tuple(final["CIS_COMPO_bdpm"][0]),
        generics=tuple(_unique(final["CIS_GENER_bdpm"][0], lambda g: (g.group_id, g.cis))),
        conditions=tuple(final["CIS_CPD_bdpm"][0]),
        availability=tuple(final["CIS_CIP_Dispo_Spec"][0]),
        mitm=tuple(_unique(final["CIS_MITM"][0], lambda m: m.cis)),
        files=tuple(final[spec.stem][1] for spec in FILES),
    )


def _unique(records: list[Any], key: Callable[[Any], Any]) -> list[Any]:
    seen: set[Any] = set()
    kept = []
    for record in records:
        marker = key(record)
        if marker not in seen:
            seen.add(marker)
            kept.append(record)
    return kept


def folder_digest(files: Mapping[str, bytes]) -> str:
    """SHA-256 over the files in a fixed order: same files, same edition hash."""
    digest = hashlib.sha256()
    for spec in FILES:
        content = files.get(spec.stem, b"")
        digest.update(spec.stem.encode() + b"\0" + str(len(content)).encode() + b"\0")
        digest.update(content)
    return digest.hexdigest()
