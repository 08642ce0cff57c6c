"""The interaction knowledge: built from the parsed PDFs, saved as data, queried by ATC.

Building is pure (raw entries and BDPM substances in, :class:`ThesaurusData` out); the
committed data file makes the appliance work out of the box, and a newer edition imported
on site is kept in the store and takes precedence. Every fact keeps its source (edition,
page, the two entries as printed); every doubt of the parser is kept in ``parse_warnings``.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path

import msgspec

from services.medications.atc import active_moieties
from services.medications.logic import fold
from services.medications.models import (
    LEVEL_SEVERITY,
    Component,
    Interaction,
    InteractionView,
    Level,
    LevelCondition,
    SourceRef,
    ThesaurusData,
    ThesaurusEntity,
)
from services.medications.thesaurus_pdf import (
    IndexItem,
    ParsedThesaurus,
    RawEntry,
    parse_levels,
    split_members,
    split_see_also,
)

FORMAT_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"
SOURCE = "ANSM, Thésaurus des interactions médicamenteuses"

_MESSAGES: dict[Level, str] = {
    Level.CONTRAINDICATION: "Contre-indication : ne pas associer {a} et {b}.",
    Level.NOT_RECOMMENDED: "Association déconseillée : {a} et {b}, à éviter sauf nécessité.",
    Level.PRECAUTION: "Précaution d'emploi : {a} avec {b}, surveiller ou adapter la dose.",
    Level.TAKE_INTO_ACCOUNT: "À prendre en compte : {a} avec {b}, risque à évaluer.",
}
_CONDITIONAL = " Le niveau dépend de la dose ou du contexte (voir les conditions)."


def message(a: str, b: str, levels: Sequence[LevelCondition]) -> str:
    """The appliance's own sentence for a pair (ANSM's text is shown only on request)."""
    top = max(levels, key=lambda item: LEVEL_SEVERITY[item.level]).level
    text = _MESSAGES[top].format(a=a.lower(), b=b.lower())
    return text + (_CONDITIONAL if len(levels) > 1 else "")


# --- names ---------------------------------------------------------------------------------

_EXTRAPOLATION = re.compile(r"\(?\s*ET,? PAR EXTRAPOLATION,?\s*", re.IGNORECASE)
_INVERTED = re.compile(r"^(.+?) \(((?:[^()]*?\s)?(?:DE|D'|D’)|ACIDE)\)$", re.IGNORECASE)


def uninvert(name: str) -> str:
    """``VALPROÏQUE (ACIDE)`` -> ``ACIDE VALPROÏQUE``; ``sodium (bicarbonate de)`` -> ..."""
    match = _INVERTED.match(name.strip())
    if match is None:
        return name.strip()
    head, tail = match.groups()
    joiner = "" if tail.endswith(("'", "’")) else " "
    return f"{tail}{joiner}{head}"


def _balanced(part: str) -> str:
    """Drop the bracket a split left unmatched (``X (ET, PAR EXTRAPOLATION, Y)``)."""
    text = part.strip()
    while text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1].strip()
    while text.startswith("(") and text.count("(") > text.count(")"):
        text = text[1:].strip()
    return text


def heading_members(name: str) -> list[str] | None:
    """Substances named by a heading that stands for several (``A + B``, extrapolations)."""
    if _EXTRAPOLATION.search(name):
        parts = [_balanced(p) for p in _EXTRAPOLATION.split(name) if _balanced(p)]
        return [uninvert(part) for part in parts] if len(parts) > 1 else None
    if " + " in name:
        return [part.strip() for part in name.split(" + ")]
    return None


_SALT_SUFFIXES = {
    "ANHYDRE",
    "MONOHYDRATE",
    "DIHYDRATE",
    "TRIHYDRATE",
    "SESQUIHYDRATE",
    "HEMIHYDRATE",
    "HYDRATE",
    "BASE",
    "SODIQUE",
    "POTASSIQUE",
    "CALCIQUE",
    "MAGNESIQUE",
    "DISODIQUE",
    # Ester prodrugs named after their moiety in the thesaurus (« DABIGATRAN » is dabigatran
    # étexilate, « OLMÉSARTAN » olmésartan médoxomil): the ester is how it is given.
    "ETEXILATE",
    "MEDOXOMIL",
    "AXETIL",
    "PIVOXIL",
}


COUNTER_IONS = frozenset(
    {
        "ACETATE",
        "ASCORBATE",
        "ASPARTATE",
        "BESILATE",
        "BESYLATE",
        "BICARBONATE",
        "BITARTRATE",
        "BROMHYDRATE",
        "BROMURE",
        "CARBONATE",
        "CHLORHYDRATE",
        "CHLORURE",
        "CITRATE",
        "DICHLORHYDRATE",
        "DIHYDROGENOPHOSPHATE",
        "EMBONATE",
        "FLUORURE",
        "FUMARATE",
        "GLUCONATE",
        "GLYCEROPHOSPHATE",
        "HYDROGENOCARBONATE",
        "HYDROGENOMALATE",
        "HYDROGENOPHOSPHATE",
        "HYDROGENOSULFATE",
        "HYDROGENOTARTRATE",
        "HYDROXYDE",
        "IODHYDRATE",
        "IODURE",
        "LACTATE",
        "MALATE",
        "MALEATE",
        "MESILATE",
        "MESYLATE",
        "NITRATE",
        "OXALATE",
        "OXYDE",
        "PAMOATE",
        "PHOSPHATE",
        "PIDOLATE",
        "SUCCINATE",
        "SULFATE",
        "TARTRATE",
        "TOSILATE",
        # Corticoid and hormone esters: « PROPIONATE DE FLUTICASONE » is fluticasone for
        # the thesaurus (whose entries name the steroid, whatever the ester).
        "ACETONIDE",
        "DIPROPIONATE",
        "FUROATE",
        "HEXACETONIDE",
        "PROPIONATE",
        "VALERATE",
    }
)
"""Salt-forming partners: ``CHLORHYDRATE D'AMBROXOL`` is ambroxol, ``CARBONATE DE CALCIUM``
is calcium, but ``FOLINATE DE CALCIUM`` is folinic acid, not calcium (not in this list)."""


def _drop_counter_ion(match: re.Match[str]) -> str:
    inside = fold(match.group(1)).split(" ")
    return "" if inside and inside[0] in COUNTER_IONS | _SALT_SUFFIXES else match.group(0)


def name_keys(name: str) -> list[str]:
    """Folded forms a substance name is looked up under, most exact first.

    BDPM names salts several ways (``AMLODIPINE (BÉSILATE D')``, ``BÉSILATE D'AMLODIPINE``,
    ``PANTOPRAZOLE SODIQUE SESQUIHYDRATÉ``); the thesaurus names the moiety.
    """
    keys = [fold(name), fold(uninvert(name))]
    # « AMLODIPINE (BÉSILATE D') » is amlodipine; « CALCIUM (FOLINATE DE) » is not calcium.
    bare = re.sub(r"\s*\(([^()]*)\)", _drop_counter_ion, name).strip()
    keys.append(fold(bare))
    words = fold(bare).split(" ")
    while len(words) > 1 and words[-1] in _SALT_SUFFIXES:
        words = words[:-1]
    keys.append(" ".join(words))
    if len(words) > 2 and words[0] in COUNTER_IONS and words[1] in {"DE", "D"}:
        keys.append(" ".join(words[2:]))
    return list(dict.fromkeys(key for key in keys if key))


class SubstanceIndex:
    """BDPM substances by name, and the ATC codes of the specialities that contain them."""

    def __init__(self, components: Iterable[Component], atc_by_cis: Mapping[str, str]) -> None:
        components = list(components)
        self._codes_by_key: dict[str, set[str]] = defaultdict(set)
        exact: dict[str, set[str]] = defaultdict(set)
        for item in components:
            exact[fold(item.substance_name)].add(item.substance_code)
            for key in name_keys(item.substance_name):
                self._codes_by_key[key].add(item.substance_code)
        self._exact = exact
        linked: dict[str, set[str]] = defaultdict(set)
        by_link: dict[tuple[str, str, int | None], set[str]] = defaultdict(set)
        for item in components:
            if item.link_no is not None:
                by_link[(item.cis, item.element, item.link_no)].add(item.substance_code)
        for codes in by_link.values():
            for code in codes:
                linked[code] |= codes
        self._linked = linked
        self._mono: dict[str, set[str]] = defaultdict(set)
        self._combo: dict[str, set[str]] = defaultdict(set)
        for cis, moieties in active_moieties(components).items():
            atc = atc_by_cis.get(cis)
            if atc is None:
                continue
            target = self._mono if len(moieties) == 1 else self._combo
            for code in moieties:
                target[code].add(atc)

    def codes_for(self, name: str) -> set[str]:
        """BDPM substance codes for a thesaurus name (exact name first, then salt-free)."""
        for key in name_keys(name):
            codes = self._exact.get(key) or self._codes_by_key.get(key)
            if codes:
                found: set[str] = set()
                for code in codes:
                    found |= self._linked.get(code, {code})
                return found
        return set()

    def atc_for(self, codes: Iterable[str]) -> tuple[set[str], set[str]]:
        """ATC codes of single-substance specialities, and of combinations, for ``codes``."""
        mono: set[str] = set()
        combo: set[str] = set()
        for code in codes:
            mono |= self._mono.get(code, set())
            combo |= self._combo.get(code, set())
        return mono, combo


# --- building -----------------------------------------------------------------------------


class _Pair:
    def __init__(self, a: str, b: str) -> None:
        self.a, self.b = a, b
        self.entries: list[RawEntry] = []


def _resolve_partner(entry_key: str, partner: str, known: set[str]) -> tuple[str, str | None]:
    """Key of a partner, reading « AUTRES X » under X as another member of X."""
    key = fold(partner)
    if key in known:
        return key, None
    for candidate in (key.removeprefix("AUTRES "), key.removesuffix(" AUTRES")):
        if candidate != key and (candidate == entry_key or candidate in known):
            return candidate, f"partner '{partner}' read as another member of '{candidate}'"
    return key, None


def build(
    parsed: ParsedThesaurus,
    classes: Sequence[IndexItem],
    substances: Sequence[IndexItem],
    index: SubstanceIndex,
    *,
    catalog_edition: str | None,
    generated_by: str,
) -> ThesaurusData:
    """Merge both directions of each pair, resolve classes, map substances to ATC."""
    warnings = list(parsed.warnings)
    names: dict[str, str] = {}
    members: dict[str, set[str]] = defaultdict(set)
    class_keys: set[str] = set()
    substance_keys = {fold(uninvert(item.name)) for item in substances}
    for item in substances:
        names.setdefault(fold(uninvert(item.name)), item.name)
    for item in classes:
        key = fold(item.name)
        class_keys.add(key)
        names.setdefault(key, item.name)
        found, complete = split_members(item.text)
        if not complete:
            warnings.append(f"class '{item.name}': member list truncated in the index PDF")
        for member in found:
            member_key = fold(uninvert(member))
            if substance_keys and member_key not in substance_keys:
                warnings.append(
                    f"class '{item.name}': member '{member}' is not in the substance index, ignored"
                )
                continue
            members[key].add(member_key)
            names.setdefault(member_key, member)
    for item in substances:
        for class_name in split_see_also(item.text):
            key = fold(class_name)
            if key in class_keys:
                members[key].add(fold(uninvert(item.name)))
            else:
                warnings.append(
                    f"substance '{item.name}': class '{class_name}' is not in the class index"
                )
    for heading in parsed.headings:
        key = fold(heading.name)
        names[key] = heading.name
        parts = heading_members(heading.name)
        if parts:
            class_keys.add(key)
            for part in parts:
                part_key = fold(part)
                members[key].add(part_key)
                names.setdefault(part_key, part)
        elif heading.note.startswith("(") or key in class_keys:
            class_keys.add(key)
            if heading.note.startswith("("):
                for member in split_members(heading.note)[0]:
                    members[key].add(fold(uninvert(member)))
    known = set(names)
    pairs: dict[frozenset[str], _Pair] = {}
    notes: dict[frozenset[str], list[str]] = defaultdict(list)
    for entry in parsed.entries:
        a = fold(entry.entry)
        b, note = _resolve_partner(a, entry.partner, known)
        names.setdefault(b, entry.partner)
        pair_key = frozenset((a, b))
        pair = pairs.setdefault(pair_key, _Pair(*sorted((a, b))))
        pair.entries.append(entry)
        if note and note not in notes[pair_key]:
            notes[pair_key].append(note)
        if substance_keys and b not in class_keys | substance_keys and b not in members:
            note = f"'{entry.partner}' is in neither index: treated as a substance"
            if note not in warnings:
                warnings.append(note)
    interactions = [
        _interaction(pair, names, notes[frozenset((pair.a, pair.b))], parsed.edition)
        for pair in pairs.values()
    ]
    interactions.sort(key=lambda item: (item.a, item.b))
    entity_keys = set(names) | {k for pair in pairs.values() for k in (pair.a, pair.b)}
    entities: list[ThesaurusEntity] = []
    unmapped: list[str] = []
    for key in sorted(entity_keys):
        if key in class_keys:
            entities.append(
                ThesaurusEntity(
                    key=key,
                    name=names.get(key, key),
                    kind="class",
                    members=tuple(sorted(members[key])),
                )
            )
            continue
        codes = index.codes_for(names.get(key, key)) or index.codes_for(key)
        mono, combo = index.atc_for(codes)
        mapping = "mono" if mono else "combination" if combo else ""
        if not mapping:
            unmapped.append(names.get(key, key))
        entities.append(
            ThesaurusEntity(
                key=key,
                name=names.get(key, key),
                kind="substance",
                atc=tuple(sorted(mono)),
                combination_atc=tuple(sorted(combo)),
                substance_codes=tuple(sorted(codes)),
                mapping=mapping,
            )
        )
    substance_count = sum(1 for e in entities if e.kind == "substance")
    index_substances = [e for e in entities if e.kind == "substance" and e.key in substance_keys]
    stats = {
        "directional_entries": float(len(parsed.entries)),
        "pairs": float(len(interactions)),
        "classes": float(sum(1 for e in entities if e.kind == "class")),
        "substances": float(substance_count),
        "substances_mapped": float(substance_count - len(unmapped)),
        "substances_mapped_share": round((substance_count - len(unmapped)) / substance_count, 4)
        if substance_count
        else 0.0,
        "index_substances": float(len(index_substances)),
        "index_substances_mapped_share": round(
            sum(1 for e in index_substances if e.mapping) / len(index_substances), 4
        )
        if index_substances
        else 0.0,
        "pairs_with_warnings": float(sum(1 for i in interactions if i.parse_warnings)),
    }
    return ThesaurusData(
        format=FORMAT_VERSION,
        edition=parsed.edition,
        source=f"{SOURCE}, édition {parsed.edition}",
        generated_by=generated_by,
        catalog_edition=catalog_edition,
        entities=tuple(entities),
        interactions=tuple(interactions),
        unmapped=tuple(sorted(unmapped)),
        parse_warnings=tuple(warnings),
        stats=stats,
    )


def _interaction(
    pair: _Pair, names: Mapping[str, str], notes: list[str], edition: str
) -> Interaction:
    warnings = list(notes)
    parsed_levels: list[tuple[RawEntry, list[LevelCondition]]] = []
    for entry in pair.entries:
        levels, level_warnings = parse_levels(entry.level_text, entry.conduct)
        warnings.extend(f"p.{entry.page}: {w}" for w in (*entry.warnings, *level_warnings))
        if levels:
            parsed_levels.append((entry, levels))
    if not parsed_levels:
        raise ValueError(f"no level could be read for {pair.a} + {pair.b}")
    reference, levels = parsed_levels[0]
    for other, other_levels in parsed_levels[1:]:
        if [lv.level for lv in other_levels] != [lv.level for lv in levels]:
            warnings.append(
                f"the two entries disagree (p.{reference.page} {reference.level_text!r}, "
                f"p.{other.page} {other.level_text!r}): the more severe is kept"
            )
            if max(LEVEL_SEVERITY[lv.level] for lv in other_levels) > max(
                LEVEL_SEVERITY[lv.level] for lv in levels
            ):
                reference, levels = other, other_levels
    top = max(levels, key=lambda item: LEVEL_SEVERITY[item.level]).level
    a_name, b_name = names.get(pair.a, pair.a), names.get(pair.b, pair.b)
    return Interaction(
        a=pair.a,
        b=pair.b,
        level=top,
        levels=tuple(levels),
        message=message(a_name, b_name, levels),
        mechanism=reference.mechanism,
        conduct=reference.conduct,
        sources=tuple(
            SourceRef(page=e.page, entry=e.entry, partner=e.partner) for e in pair.entries
        ),
        parse_warnings=tuple(dict.fromkeys(warnings)),
    )


# --- the loaded knowledge -------------------------------------------------------------------


def bundled_path() -> Path:
    """The newest committed data file (``ansm-thesaurus-YYYY-MM.json``)."""
    files = sorted(DATA_DIR.glob("ansm-thesaurus-*.json"))
    if not files:
        raise FileNotFoundError(f"no thesaurus data file in {DATA_DIR}")
    return files[-1]


def encode(data: ThesaurusData) -> bytes:
    return msgspec.json.format(msgspec.json.encode(data), indent=1)


def decode(raw: bytes) -> ThesaurusData:
    return msgspec.json.decode(raw, type=ThesaurusData)


class Thesaurus:
    """Indexes over one edition: by entity key, by ATC code, by BDPM substance code."""

    def __init__(self, data: ThesaurusData) -> None:
        self.data = data
        self.edition = data.edition
        self.entities = {entity.key: entity for entity in data.entities}
        self._pairs: dict[str, list[Interaction]] = defaultdict(list)
        for item in data.interactions:
            self._pairs[item.a].append(item)
            if item.b != item.a:
                self._pairs[item.b].append(item)
        self._classes_of: dict[str, set[str]] = defaultdict(set)
        for entity in data.entities:
            for member in entity.members:
                self._classes_of[member].add(entity.key)

    @cached_property
    def _by_atc(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for entity in self.data.entities:
            for code in (*entity.atc, *entity.combination_atc):
                found[code].add(entity.key)
        return found

    @cached_property
    def _by_substance_code(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for entity in self.data.entities:
            for code in entity.substance_codes:
                found[code].add(entity.key)
        return found

    def expand(self, keys: Iterable[str]) -> set[str]:
        """The substances and every class they belong to (classes nest one level deep)."""
        result = set(keys)
        frontier = set(result)
        while frontier:
            nxt: set[str] = set()
            for key in frontier:
                nxt |= self._classes_of.get(key, set()) - result
            result |= nxt
            frontier = nxt
        return result

    def keys_for_atc(self, atc: str) -> set[str]:
        return self.expand(self._by_atc.get(atc.strip().upper(), set()))

    def keys_for_substance_codes(self, codes: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for code in codes:
            found |= self._by_substance_code.get(code, set())
        return self.expand(found)

    def keys_for_name(self, name: str) -> set[str]:
        key = fold(uninvert(name))
        return self.expand({key}) if key in self.entities else set()

    def between(self, left: set[str], right: set[str]) -> list[tuple[Interaction, str, str]]:
        """Pairs with one side in ``left`` and the other in ``right``, most severe first."""
        found: dict[tuple[str, str], tuple[Interaction, str, str]] = {}
        for key in left:
            for item in self._pairs.get(key, []):
                other = item.b if item.a == key else item.a
                if other not in right:
                    continue
                if item.a == item.b and not self._different_members(item.a, left, right):
                    continue
                found.setdefault((item.a, item.b), (item, key, other))
        return sorted(found.values(), key=lambda t: -LEVEL_SEVERITY[t[0].level])

    def _different_members(self, class_key: str, left: set[str], right: set[str]) -> bool:
        """« X + autres X » applies to two *different* members, not to one taken twice."""
        entity = self.entities.get(class_key)
        members = set(entity.members) if entity else set()
        return bool(left & members) and bool(right & members) and left & members != right & members

    def view(
        self, item: Interaction, via: Sequence[str], *, with_source: bool = False
    ) -> InteractionView:
        names = {k: self.entities[k].name if k in self.entities else k for k in (item.a, item.b)}
        return InteractionView(
            a=names[item.a],
            b=names[item.b],
            level=item.level.value,
            levels=[{"level": lv.level.value, "condition": lv.condition} for lv in item.levels],
            message=item.message,
            via=list(via),
            sources=[
                {"edition": self.edition, "page": s.page, "entry": s.entry, "partner": s.partner}
                for s in item.sources
            ],
            edition=self.edition,
            source_text={"mechanism": item.mechanism, "conduct": item.conduct}
            if with_source
            else None,
        )

    def check(
        self, drugs: Mapping[str, set[str]], *, with_source: bool = False
    ) -> list[InteractionView]:
        """Interactions between every two drugs (label -> entity keys), most severe first."""
        labels = sorted(drugs)
        views: list[InteractionView] = []
        for i, first in enumerate(labels):
            for second in labels[i + 1 :]:
                for item, left, right in self.between(drugs[first], drugs[second]):
                    views.append(
                        self.view(
                            item,
                            [f"{first}: {left}", f"{second}: {right}"],
                            with_source=with_source,
                        )
                    )
        views.sort(key=lambda v: -LEVEL_SEVERITY[Level(v.level)])
        return views


_CACHE: dict[str, Thesaurus] = {}


def cached(cache_key: str) -> Thesaurus | None:
    """The thesaurus already loaded under ``cache_key`` (a stored edition's import id)."""
    return _CACHE.get(cache_key)


def load(raw: bytes | None = None, *, cache_key: str | None = None) -> Thesaurus:
    """The thesaurus from ``raw`` data, or the bundled file, parsed once per process.

    The bundled file is recognised by its path and mtime, stored data by ``cache_key`` or
    its hash, so a request does not parse 1.6 MB again to find the same knowledge.
    """
    if raw is None:
        path = bundled_path()
        cache_key = f"file:{path}:{path.stat().st_mtime_ns}"
    elif cache_key is None:
        cache_key = f"data:{hashlib.sha256(raw).hexdigest()}"
    if cache_key not in _CACHE:
        data = raw if raw is not None else bundled_path().read_bytes()
        _CACHE.clear()
        _CACHE[cache_key] = Thesaurus(decode(data))
    return _CACHE[cache_key]
