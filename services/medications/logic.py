"""Pure rules of the medication catalog: text folding, box codes, history diffs (no I/O)."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any, Literal

import msgspec

from services.medications.models import (
    Availability,
    CatalogSnapshot,
    GenericGroupView,
    HistoryKind,
    MedicationView,
    Presentation,
    PresentationView,
    ShortageView,
    Speciality,
    StatusChange,
)

_NON_ALNUM = re.compile(r"[^0-9A-Z]+")
_LIGATURES = str.maketrans({"Œ": "OE", "œ": "oe", "Æ": "AE", "æ": "ae", "ß": "ss"})


def fold(text: str) -> str:
    """Upper-case, accents and punctuation removed, single spaces: how names are compared.

    Pharmacists type « paracetamol » for PARACÉTAMOL and the thesaurus writes ŒSTROGÈNES
    where BDPM writes ESTROGÈNES; comparing folded forms makes those the same word.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_ALNUM.sub(" ", bare.upper()).strip()


def search_tokens(text: str) -> list[str]:
    """Folded words of a free-text query, each safe to put in an FTS5 MATCH expression."""
    return [token for token in fold(text).split(" ") if token]


CodeKind = Literal["cis", "cip7", "cip13", "text"]
_GS = "\x1d"


def gtin_to_cip13(gtin: str) -> str | None:
    """The CIP13 carried by a GTIN-14 read from a box (``0`` + CIP13), if it is one."""
    if len(gtin) == 14 and gtin.isdigit() and gtin.startswith("03400"):
        return gtin[1:]
    return None


def datamatrix_cip13(raw: str) -> str | None:
    """The CIP13 of a French box DataMatrix (GS1: ``01`` + GTIN-14, then lot, expiry...).

    Accepts the raw scan (``0103400935...17...``, with or without the GS separator or the
    ``]d2`` symbology prefix) and the human-readable ``(01)03400...`` form.
    """
    text = raw.strip().removeprefix("]d2").replace(_GS, "")
    if text.startswith("(01)"):
        text = "01" + text[4:]
    if text.startswith("01") and len(text) >= 16:
        return gtin_to_cip13(text[2:16])
    return None


def classify_code(query: str) -> tuple[CodeKind, str]:
    """Tell a CIS, CIP7, CIP13, GTIN or DataMatrix from a name typed at the counter."""
    text = query.strip()
    compact = text.replace(" ", "")
    if compact.isdigit():
        if len(compact) == 8:
            return "cis", compact
        if len(compact) == 7:
            return "cip7", compact
        if len(compact) == 13:
            return "cip13", compact
        if len(compact) == 14 and (cip13 := gtin_to_cip13(compact)):
            return "cip13", cip13
    if (cip13 := datamatrix_cip13(text)) is not None:
        return "cip13", cip13
    return "text", text


def cip13_check_digit_ok(cip13: str) -> bool:
    """EAN-13 check digit: a mistyped or misread code must not silently match another box."""
    if len(cip13) != 13 or not cip13.isdigit():
        return False
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(cip13[:12]))
    return (10 - total % 10) % 10 == int(cip13[12])


def marketing_label(marketed: bool) -> str:
    return "commercialisée" if marketed else "non commercialisée"


def snapshot(
    specialities: Iterable[Speciality],
    presentations: Iterable[Presentation],
    availability: Iterable[Availability],
) -> CatalogSnapshot:
    """The part of a catalog whose changes are history (status, price, supply)."""
    supply: dict[tuple[str, str], tuple[int, str, str]] = {}
    for item in availability:
        start = item.start_date.isoformat() if item.start_date else ""
        supply[(item.cis, item.cip13 or "")] = (item.status_code, item.status_label, start)
    return CatalogSnapshot(
        specialities={s.cis: marketing_label(s.marketed) for s in specialities},
        presentations={p.cip13: (p.cis, p.marketing_status, p.price_cents) for p in presentations},
        availability=supply,
    )


def _euros(cents: int | None) -> str | None:
    return None if cents is None else f"{cents / 100:.2f}"


def diff_catalog(previous: CatalogSnapshot | None, current: CatalogSnapshot) -> list[StatusChange]:
    """Changes between two imports; ``None`` means first import (only supply is recorded).

    Supply entries carry their own start date, so the first import records those in force
    as started; statuses and prices have no date in the files, so the first import is only
    the baseline they are compared against later.
    """
    changes: list[StatusChange] = []
    before = previous or CatalogSnapshot(specialities={}, presentations={}, availability={})
    if previous is not None:
        for cis, status in current.specialities.items():
            old = before.specialities.get(cis)
            if old is None:
                changes.append(
                    StatusChange(cis=cis, cip13=None, kind=HistoryKind.ADDED, old=None, new=status)
                )
            elif old != status:
                changes.append(
                    StatusChange(
                        cis=cis, cip13=None, kind=HistoryKind.SPECIALITY_STATUS, old=old, new=status
                    )
                )
        for cis, old in before.specialities.items():
            if cis not in current.specialities:
                changes.append(
                    StatusChange(cis=cis, cip13=None, kind=HistoryKind.REMOVED, old=old, new=None)
                )
        for cip13, (cis, status, price) in current.presentations.items():
            prior = before.presentations.get(cip13)
            if prior is None:
                continue
            if prior[1] != status:
                changes.append(
                    StatusChange(
                        cis=cis,
                        cip13=cip13,
                        kind=HistoryKind.PRESENTATION_STATUS,
                        old=prior[1],
                        new=status,
                    )
                )
            if prior[2] != price:
                changes.append(
                    StatusChange(
                        cis=cis,
                        cip13=cip13,
                        kind=HistoryKind.PRICE,
                        old=_euros(prior[2]),
                        new=_euros(price),
                    )
                )
    for key, (code, label, start) in current.availability.items():
        prior_supply = before.availability.get(key)
        cis, cip13 = key
        if prior_supply is None:
            kind, old = HistoryKind.AVAILABILITY_STARTED, None
        elif prior_supply[0] != code or prior_supply[2] != start:
            kind, old = HistoryKind.AVAILABILITY_CHANGED, prior_supply[1]
        else:
            continue
        new = f"{label} (depuis le {start})" if start else label
        changes.append(StatusChange(cis=cis, cip13=cip13 or None, kind=kind, old=old, new=new))
    for key, (_code, label, _start) in before.availability.items():
        if key not in current.availability:
            cis, cip13 = key
            changes.append(
                StatusChange(
                    cis=cis,
                    cip13=cip13 or None,
                    kind=HistoryKind.AVAILABILITY_ENDED,
                    old=label,
                    new=None,
                )
            )
    return changes


def content_hash_name(edition: str, digest: str) -> str:
    """The edition label analyses record: the operator's name plus the content hash."""
    return f"{edition}#{digest[:12]}"


def encode_json(value: object) -> str:
    return msgspec.json.encode(value).decode()


_GENERIC_ROLES = {
    0: "princeps",
    1: "générique",
    2: "complémentarité posologique",
    4: "substituable",
}


def _cents_to_eur(cents: Any) -> float | None:
    return None if cents is None else round(int(cents) / 100, 2)


def build_views(
    order: Sequence[str],
    specialities: Iterable[Mapping[str, Any]],
    presentations: Iterable[Mapping[str, Any]],
    components: Iterable[Mapping[str, Any]],
    generics: Iterable[Mapping[str, Any]],
    availability: Iterable[Mapping[str, Any]],
) -> list[MedicationView]:
    """Assemble counter views from catalog rows, in the order of ``order`` (search rank)."""
    boxes: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in presentations:
        boxes[row["cis"]].append(row)
    named: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"FT": [], "SA": []})
    for row in components:
        names = named[row["cis"]][row["nature"] if row["nature"] == "FT" else "SA"]
        if row["substance_name"] not in names:
            names.append(row["substance_name"])
    # The active moiety (FT) is what a pharmacist calls the substance; salts otherwise.
    substances = {cis: kinds["FT"] or kinds["SA"] for cis, kinds in named.items()}
    groups: dict[str, GenericGroupView] = {}
    for row in generics:
        groups.setdefault(
            row["cis"],
            GenericGroupView(
                group_id=row["group_id"],
                label=row["label"],
                role=_GENERIC_ROLES.get(row["kind"], str(row["kind"])),
            ),
        )
    supply: dict[str, list[ShortageView]] = defaultdict(list)
    for row in availability:
        supply[row["cis"]].append(
            ShortageView(
                cip13=row["cip13"],
                status=row["status_label"],
                since=date.fromisoformat(row["start_date"]) if row["start_date"] else None,
                updated=date.fromisoformat(row["updated_date"]) if row["updated_date"] else None,
                link=row["link"],
            )
        )
    by_cis = {row["cis"]: row for row in specialities}
    views: list[MedicationView] = []
    for cis in order:
        found = by_cis.get(cis)
        if found is None:
            continue
        row = found
        shortages = supply.get(cis, [])
        box_shortage = {s.cip13: s.status for s in shortages if s.cip13}
        general = next((s.status for s in shortages if s.cip13 is None), None)
        items = sorted(boxes.get(cis, []), key=lambda b: (not b["marketed"], b["cip13"]))
        views.append(
            MedicationView(
                cis=cis,
                name=row["name"],
                form=row["form"],
                routes=[r for r in row["routes"].split(";") if r],
                marketed=bool(row["marketed"]),
                status=marketing_label(bool(row["marketed"])),
                reinforced_monitoring=bool(row["reinforced_monitoring"]),
                shortages=shortages,
                atc=row["atc"],
                atc_source=row["atc_source"],
                substances=substances.get(cis, []),
                generic_group=groups.get(cis),
                reimbursement_rates=sorted(
                    {b["reimbursement_rate"] for b in items if b["reimbursement_rate"] is not None}
                ),
                presentations=[
                    PresentationView(
                        cip13=b["cip13"],
                        cip7=b["cip7"],
                        label=b["label"],
                        marketed=bool(b["marketed"]),
                        marketing_status=b["marketing_status"],
                        reimbursement_rate=b["reimbursement_rate"],
                        price_eur=_cents_to_eur(b["price_cents"]),
                        price_with_fees_eur=_cents_to_eur(b["price_with_fees_cents"]),
                        shortage=box_shortage.get(b["cip13"], general),
                    )
                    for b in items
                ],
            )
        )
    return views
