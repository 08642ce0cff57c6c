"""Reading the ANSM thesaurus PDFs: positioned words in, raw entries out.

The thesaurus is typeset with a small, stable set of fonts, and the font says what a word
is: bold 10 pt starts an entry (substance or class), ``+`` and bold oblique 8 pt name the
partner, bold 7 pt in the right column is the level, regular 7 pt is the mechanism on the
left and the conduct on the right. Reading by font and position is far more reliable than
reading the extracted text flow, which interleaves the two columns.

Only :func:`read_pdf_words` does I/O (through pdfplumber); everything else is pure.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec

from services.medications.models import Level, LevelCondition

RIGHT_COLUMN_X = 310.0
"""Left edge of the level/conduct column (the mechanism column ends before it)."""
LINE_TOLERANCE = 2.0
FOOTER_TOP = 785.0
"""Index pages print « Page n sur m » below this line (A4 portrait, 842 pt high)."""
WRAP_GAP = 14.0
UNMAPPED_GLYPH = "\x1a"
"""A glyph of the embedded Gulim font with no Unicode mapping; printed as ≥ in the PDF."""

Kind = Literal["heading", "partner", "mechanism", "level", "conduct"]


class PdfWord(NamedTuple):
    page: int
    x0: float
    top: float
    font: str
    size: float
    text: str


class Line(NamedTuple):
    page: int
    top: float
    kind: Kind
    text: str


class RawEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One « entry + partner » block as printed, before pairs are merged."""

    page: int
    entry: str
    partner: str
    level_text: str
    mechanism: str
    conduct: str
    warnings: tuple[str, ...] = ()


class RawHeading(msgspec.Struct, frozen=True, kw_only=True):
    """An entry heading and the indented note under it (class members or « Voir aussi »)."""

    page: int
    name: str
    note: str


class ParsedThesaurus(msgspec.Struct, frozen=True, kw_only=True):
    entries: tuple[RawEntry, ...]
    headings: tuple[RawHeading, ...]
    edition: str
    warnings: tuple[str, ...]


def read_pdf_words(path: Path, pages: Iterable[int] | None = None) -> list[PdfWord]:
    """Every word of a PDF (or of some 1-based ``pages``) with position, font and size.

    pdfminer spends seconds per page on the thesaurus (249 pages), so a long read is split
    across the machine's cores, one pdfplumber per process; words come back in page order.
    """
    import pdfplumber

    with pdfplumber.open(str(path)) as pdf:
        count = len(pdf.pages)
    every = range(1, count + 1)
    wanted = sorted({p for p in pages if 1 <= p <= count} if pages is not None else every)
    workers = min(os.cpu_count() or 1, len(wanted) // _PAGES_PER_WORKER)
    if workers < 2:
        return _read_pages(path, wanted)
    chunks = [wanted[i::workers] for i in range(workers)]
    context = multiprocessing.get_context("spawn")  # no fork of a threaded server process
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        parts = list(pool.map(_read_pages, [path] * workers, chunks))
    return sorted((w for part in parts for w in part), key=lambda w: w.page)


_PAGES_PER_WORKER = 20
"""Below this many pages per process, starting the processes costs more than it saves."""


def _read_pages(path: Path, pages: Sequence[int]) -> list[PdfWord]:
    import pdfplumber

    words: list[PdfWord] = []
    with pdfplumber.open(str(path)) as pdf:
        for number in pages:
            page = pdf.pages[number - 1]
            for word in page.extract_words(extra_attrs=["fontname", "size"]):
                words.append(
                    PdfWord(
                        page=number,
                        x0=float(word["x0"]),
                        top=float(word["top"]),
                        font=str(word["fontname"]),
                        size=round(float(word["size"]), 1),
                        text=str(word["text"]),
                    )
                )
            page.flush_cache()
    return words


def _kind(word: PdfWord) -> Kind | None:
    if "Arial" in word.font or "Helvetica" not in word.font:
        return None
    bold = "Bold" in word.font
    if bold and word.size >= 9.5:
        return "heading"
    if bold and word.size >= 7.5:
        return "partner"
    if word.size >= 7.5:
        return None  # page numbers in the header
    if word.x0 >= RIGHT_COLUMN_X:
        return "level" if bold else "conduct"
    return "mechanism"


_ORDER: dict[Kind, int] = {
    "heading": 0,
    "partner": 1,
    "level": 3,
    "mechanism": 4,
    "conduct": 5,
}


def group_lines(words: Iterable[PdfWord]) -> list[Line]:
    """Words to lines per page and kind, in reading order.

    Words drawn twice at the same place (the PDF overprints some headings) are kept once.
    Glyphs of the Gulim font inherit the kind of the text they sit in.
    """
    buckets: dict[tuple[int, Kind], list[PdfWord]] = {}
    seen: set[tuple[int, int, int, str]] = set()
    for word in words:
        marker = (word.page, round(word.x0), round(word.top), word.text)
        if marker in seen:
            continue
        seen.add(marker)
        if "Gulim" in word.font:
            kind: Kind | None = "conduct" if word.x0 >= RIGHT_COLUMN_X else "mechanism"
        else:
            kind = _kind(word)
        if kind is not None:
            buckets.setdefault((word.page, kind), []).append(word)
    lines: list[Line] = []
    for (page, kind), items in buckets.items():
        items.sort(key=lambda w: (w.top, w.x0))
        current: list[PdfWord] = []
        for word in items:
            if current and abs(word.top - current[0].top) > LINE_TOLERANCE:
                lines.append(_line(page, kind, current))
                current = []
            current.append(word)
        if current:
            lines.append(_line(page, kind, current))
    lines.sort(key=lambda line: (line.page, round(line.top), _ORDER[line.kind]))
    return lines


def _line(page: int, kind: Kind, words: list[PdfWord]) -> Line:
    words = sorted(words, key=lambda w: w.x0)
    return Line(page=page, top=words[0].top, kind=kind, text=" ".join(w.text for w in words))


class _Block:
    """Accumulates one partner block while lines stream by."""

    def __init__(self, page: int, entry: str, partner: str, top: float) -> None:
        self.page = page
        self.entry = entry
        self.partner = partner
        self.partner_top = top
        self.levels: list[str] = []
        self.mechanism: list[str] = []
        self.conduct: list[str] = []

    def finish(self) -> RawEntry:
        warnings: list[str] = []
        if len(self.levels) != 1:
            warnings.append(f"{len(self.levels)} level lines found, expected 1")
        mechanism = "\n".join(self.mechanism)
        conduct = "\n".join(self.conduct)
        if UNMAPPED_GLYPH in mechanism + conduct:
            warnings.append("a symbol without text mapping was read as '≥' (check the source)")
            mechanism = mechanism.replace(UNMAPPED_GLYPH, "≥")
            conduct = conduct.replace(UNMAPPED_GLYPH, "≥")
        return RawEntry(
            page=self.page,
            entry=self.entry,
            partner=self.partner,
            level_text=" ".join(self.levels),
            mechanism=mechanism,
            conduct=conduct,
            warnings=tuple(warnings),
        )


def parse_entries(words: Sequence[PdfWord]) -> ParsedThesaurus:
    """Walk the thesaurus lines and cut them into headings and partner blocks."""
    lines = group_lines(words)
    edition = _edition(words)
    entries: list[RawEntry] = []
    headings: list[RawHeading] = []
    warnings: list[str] = []
    heading: RawHeading | None = None
    block: _Block | None = None
    previous: Line | None = None
    for line in lines:
        continues = (
            previous is not None
            and previous.kind == line.kind
            and previous.page == line.page
            and 0 < line.top - previous.top <= WRAP_GAP
        )
        if line.kind == "heading":
            if block is not None:
                entries.append(block.finish())
                block = None
            if heading is not None and continues:
                heading = msgspec.structs.replace(heading, name=f"{heading.name} {line.text}")
            else:
                if heading is not None:
                    headings.append(heading)
                heading = RawHeading(page=line.page, name=line.text, note="")
        elif line.kind == "partner":
            if heading is None:
                warnings.append(f"page {line.page}: partner '{line.text}' before any entry")
            elif line.text.startswith("+") or block is None or not continues:
                if block is not None:
                    entries.append(block.finish())
                name = line.text.removeprefix("+").strip()
                block = _Block(line.page, heading.name, name, line.top)
            else:
                block.partner = f"{block.partner} {line.text}".strip()
        elif block is None:
            # Between a heading and its first partner: class members or « Voir aussi »,
            # which may run across both columns.
            if heading is not None and line.kind != "level":
                note = f"{heading.note} {line.text}".strip()
                heading = msgspec.structs.replace(heading, note=note)
            else:
                warnings.append(f"page {line.page}: text outside any pair '{line.text[:60]}'")
        elif line.kind == "level":
            block.levels.append(line.text)
        elif line.kind == "mechanism":
            block.mechanism.append(line.text)
        else:
            block.conduct.append(line.text)
        previous = line
    if block is not None:
        entries.append(block.finish())
    if heading is not None:
        headings.append(heading)
    return ParsedThesaurus(
        entries=tuple(entries), headings=tuple(headings), edition=edition, warnings=tuple(warnings)
    )


_MONTHS = {
    "janvier": 1,
    "fevrier": 2,
    "février": 2,
    "mars": 3,
    "avril": 4,
    "mai": 5,
    "juin": 6,
    "juillet": 7,
    "aout": 8,
    "août": 8,
    "septembre": 9,
    "octobre": 10,
    "novembre": 11,
    "decembre": 12,
    "décembre": 12,
}


def _edition(words: Sequence[PdfWord]) -> str:
    """``YYYY-MM`` from the « Version : Septembre 2019 » of the cover (or the footers)."""
    texts = [w.text.lower() for w in words[:400]]
    for index, text in enumerate(texts[:-1]):
        month = _MONTHS.get(text)
        year = texts[index + 1]
        if month and re.fullmatch(r"(19|20)\d\d", year):
            return f"{year}-{month:02d}"
    return "unknown"


# --- levels --------------------------------------------------------------------------------

LEVEL_CODES: dict[str, Level] = {
    "CI": Level.CONTRAINDICATION,
    "ASDEC": Level.NOT_RECOMMENDED,
    "PE": Level.PRECAUTION,
    "APEC": Level.TAKE_INTO_ACCOUNT,
}
LEVEL_PHRASES: dict[str, Level] = {
    "CONTRE-INDICATION": Level.CONTRAINDICATION,
    "ASSOCIATION DECONSEILLEE": Level.NOT_RECOMMENDED,
    "PRECAUTION D'EMPLOI": Level.PRECAUTION,
    "A PRENDRE EN COMPTE": Level.TAKE_INTO_ACCOUNT,
}
_SECTION = re.compile(
    r"^\s*(Contre[- ]indications?|Association d[ée]conseill[ée]e|"
    r"(?:Association nécessitant une )?Pr[ée]caution d'emploi|[AÀ] prendre en compte)"
    r"(?=\s|:|$)(?:\s+avec\b)?\s*:?\s*(.*)$",
    re.IGNORECASE,
)


def _plain(text: str) -> str:
    return (
        text.upper().replace("É", "E").replace("È", "E").replace("À", "A").replace("’", "'").strip()
    )


def _section_level(header: str) -> Level:
    plain = _plain(header)
    if plain.startswith("CONTRE"):
        return Level.CONTRAINDICATION
    if plain.startswith("ASSOCIATION"):
        return Level.NOT_RECOMMENDED
    if "PRECAUTION" in plain:
        return Level.PRECAUTION
    return Level.TAKE_INTO_ACCOUNT


def parse_levels(level_text: str, conduct: str) -> tuple[list[LevelCondition], list[str]]:
    """Levels of one block, each with its condition when the thesaurus gives several.

    ``CI - ASDEC - APEC`` comes with sections « Contre-indication avec : ... »; each level
    keeps the text of its own section as its condition. If sections and codes disagree, the
    levels are kept without conditions and the doubt is recorded.
    """
    warnings: list[str] = []
    plain = _plain(level_text)
    if plain in LEVEL_PHRASES:
        codes = [LEVEL_PHRASES[plain]]
    else:
        parts = [part.strip() for part in plain.split(" - ")]
        if not parts or any(part not in LEVEL_CODES for part in parts):
            return [], [f"unknown level '{level_text}'"]
        codes = [LEVEL_CODES[part] for part in parts]
    sections: list[tuple[Level, list[str]]] = []
    for line in conduct.split("\n"):
        match = _SECTION.match(line)
        if match:
            found = _section_level(match.group(1))
            rest = match.group(2).strip()
            sections.append((found, [rest] if rest else []))
            continue
        if sections:
            sections[-1][1].append(line.strip())
    if len(codes) == 1:
        condition = "\n".join(sections[0][1]).strip() if len(sections) == 1 else ""
        if len(sections) > 1:
            warnings.append("one level but several conduct sections")
        return [LevelCondition(level=codes[0], condition=condition)], warnings
    if [level for level, _ in sections] != codes:
        warnings.append(
            f"levels {level_text!r} do not match the conduct sections "
            f"{[level.value for level, _ in sections]}: conditions not separated"
        )
        return [LevelCondition(level=code) for code in codes], warnings
    return [
        LevelCondition(level=level, condition="\n".join(text).strip()) for level, text in sections
    ], warnings


# --- class and substance indexes ---------------------------------------------------------


class IndexItem(msgspec.Struct, frozen=True, kw_only=True):
    """A bold name of an index PDF and the regular text under it."""

    page: int
    name: str
    text: str


def parse_index(words: Sequence[PdfWord]) -> list[IndexItem]:
    """Items of the class index or the substance index (bold name, then plain lines)."""
    rows: dict[tuple[int, int], list[PdfWord]] = {}
    for word in words:
        if "Arial" in word.font or word.page == 1 or word.top > FOOTER_TOP:
            continue
        rows.setdefault((word.page, round(word.top)), []).append(word)
    items: list[IndexItem] = []
    name: list[str] = []
    text: list[str] = []
    page = 0
    last_bold = False
    for (row_page, _top), row in sorted(rows.items()):
        row.sort(key=lambda w: w.x0)
        bold = "Bold" in row[0].font
        content = " ".join(w.text for w in row)
        if bold:
            if last_bold and name:
                name.append(content)
            else:
                if name:
                    items.append(IndexItem(page=page, name=" ".join(name), text=" ".join(text)))
                name, text, page = [content], [], row_page
        elif name:
            text.append(content)
        last_bold = bold
    if name:
        items.append(IndexItem(page=page, name=" ".join(name), text=" ".join(text)))
    return items


def split_members(text: str) -> tuple[list[str], bool]:
    """Members of ``(a, b (sel de), c)`` and whether the list was complete (closed)."""
    body = text.strip()
    closed = body.endswith(")")
    if body.startswith("("):
        body = body[1:]
    if closed:
        body = body[:-1]
    members: list[str] = []
    depth = 0
    current = ""
    for char in body:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            members.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        members.append(current.strip())
    return [m for m in members if m], closed and depth == 0


def split_see_also(text: str) -> list[str]:
    """Class names after « Voir : » or « voir aussi : », separated by `` - ``."""
    _, _, tail = text.partition(":")
    return [part.strip() for part in tail.split(" - ") if part.strip()]
