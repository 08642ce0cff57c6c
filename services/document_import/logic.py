"""Pure logic of prescription import: the French posology parser, the reading of an OCR'd
page into prescriber / patient / date / lines, and the fuzzy match of a line to the catalog.

No I/O: the OCR text and the catalog entries are passed in, so every rule is tested
directly. Nothing here invents a value: what is not written (or not recognised) is ``None``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from rapidfuzz import fuzz, process

from services.document_import.models import (
    CatalogEntry,
    DraftContent,
    DraftLine,
    Extraction,
    Field,
    LineOut,
    Match,
    PageText,
    ParsedPosology,
    PersonOut,
    PosologyOut,
    PrescriberOut,
    TimeOfDay,
)
from services.patients.logic import rpps_is_valid

MATCH_THRESHOLD = 0.80
"""Below this similarity (0-1) a written product is left unmatched rather than guessed."""


def fold(text: str) -> str:
    """Lower case, no accents, single spaces: how two spellings are compared."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.lower().replace("œ", "oe").split())


# --------------------------------------------------------------------------- posology

_NUMBER_WORDS = {
    "un": 1.0,
    "une": 1.0,
    "deux": 2.0,
    "trois": 3.0,
    "quatre": 4.0,
    "cinq": 5.0,
    "six": 6.0,
    "sept": 7.0,
    "huit": 8.0,
    "dix": 10.0,
    "demi": 0.5,
    "1/2": 0.5,
    "½": 0.5,
    "1/4": 0.25,
    "¼": 0.25,
    "3/4": 0.75,
}
_NUM = r"(?:\d+(?:[.,]\d+)?|1/2|1/4|3/4|½|¼|un|une|deux|trois|quatre|cinq|six|sept|huit|dix|demi)"

# Units of administration as written on prescriptions → the name kept in the record.
_UNITS: tuple[tuple[str, str], ...] = (
    (
        r"cuill?(?:e|è)res?\s+(?:a|à)\s+caf(?:e|é)|c\.?\s?(?:a|à)\s?(?:caf(?:e|é)|c\.?)|cac",
        "cuillère à café",
    ),
    (
        r"cuill?(?:e|è)res?\s+(?:a|à)\s+soupe|c\.?\s?(?:a|à)\s?(?:soupe|s\.?)|cas",
        "cuillère à soupe",
    ),
    (r"comprim(?:e|é)s?|cpr?s?\.?|comp\.?", "comprimé"),
    (r"g(?:e|é)lules?|g(?:e|é)l\.?", "gélule"),
    (r"capsules?|caps\.?", "capsule"),
    (r"sachets?(?:-doses?)?|sach\.?", "sachet"),
    (r"ampoules?|amp\.?", "ampoule"),
    (r"suppositoires?|suppo\.?s?", "suppositoire"),
    (r"gouttes?|gttes?|gtt\.?", "goutte"),
    (r"bouff(?:e|é)es?", "bouffée"),
    (r"inhalations?", "inhalation"),
    (r"pulv(?:e|é)risations?|pulv\.?", "pulvérisation"),
    (r"doses?", "dose"),
    (r"patchs?|dispositifs?", "patch"),
    (r"applications?|appl\.?", "application"),
    (r"injections?|inj\.?", "injection"),
    (r"stylos?", "stylo"),
    (r"unit(?:e|é)s?|ui|u\.i\.?", "UI"),
    (r"ml", "ml"),
    (r"mg", "mg"),
    (r"(?:µ|u|mc)g", "µg"),
    (r"g", "g"),
)
_UNIT_RE = "|".join(f"(?:{pattern})" for pattern, _ in _UNITS)
_DOSE = re.compile(rf"(?<![\w/.,])({_NUM})\s*({_UNIT_RE})(?![\w])", re.IGNORECASE)
_FREQ = re.compile(
    rf"({_NUM})\s*(?:fois|x|f)\s*(?:/|par|un|une|le|pa)?\s*(?:jour|j|24\s*h)\b", re.IGNORECASE
)
_EVERY_HOURS = re.compile(r"toutes\s+les\s+(\d+)\s*(?:h|heures?)\b", re.IGNORECASE)
_PATTERN_DOSES = re.compile(
    r"(?<![\d/])(\d(?:[.,]5)?)\s*-\s*(\d(?:[.,]5)?)\s*-\s*(\d(?:[.,]5)?)(?:\s*-\s*(\d(?:[.,]5)?))?(?![\d/])"
)
_DURATION = re.compile(
    rf"(?:pendant|pdt|durant|dur(?:e|é)e\s*(?::|de)?|pour|x|sur|qsp|q\.s\.p\.?)\s*({_NUM})\s*"
    r"(jours?|j\b|j\)|\)|\]|semaines?|sem\.?|sm\b|mois|m\b)",
    re.IGNORECASE,
)
_QSP = re.compile(r"\bq\.?\s?s\.?\s?p\.?\s*(\d+\s*(?:jours?|j|semaines?|sem|mois))", re.IGNORECASE)
_RENEW = re.compile(
    r"(?:(?:a|à)\s+renouveler|renouvelable|renouv\.?|\bAR\b|\bQSP\b.*?\bAR\b)"
    rf"(?:\s*(?::|x)?\s*({_NUM})\s*(?:fois|x)?)?",
    re.IGNORECASE,
)
_AS_NEEDED = re.compile(
    r"\bsi\s+(?:besoin|douleurs?|fi(?:e|è)vre|n(?:e|é)cessaire|naus(?:e|é)es?|crise|insomnie)"
    r"|\ben\s+cas\s+de\b|\b(?:a|à)\s+la\s+demande\b|\bSB\b",
    re.IGNORECASE,
)
_NON_SUBSTITUTABLE = re.compile(
    r"\bnon[\s-]*substituable\b|\bNS\s*(?:MTE|EFG|CIF)?\b|\bN\.S\.", re.IGNORECASE
)
_TIMES: tuple[tuple[re.Pattern[str], TimeOfDay], ...] = (
    (re.compile(r"\bmatin(?:s|ée)?\b|\bpetit[\s-]d(?:e|é)jeuner\b", re.IGNORECASE), "morning"),
    (re.compile(r"\bmidi\b|(?<!petit[\s-])\bd(?:e|é)jeuner\b", re.IGNORECASE), "noon"),
    (re.compile(r"\bsoir(?:s|ée)?\b|\bd[iî]ner\b", re.IGNORECASE), "evening"),
    (re.compile(r"\bcoucher\b|\bnuit\b", re.IGNORECASE), "bedtime"),
)
_ORDER: dict[TimeOfDay, int] = {"morning": 0, "noon": 1, "evening": 2, "bedtime": 3}
_EVENING_BEDTIME = re.compile(r"\bsoir\s*(?:,|au|-)?\s*(?:au\s+)?coucher\b", re.IGNORECASE)
_PER_DAY_ONCE = re.compile(r"(?:par|/|un|le)\s*(?:jour|j)\b|\bquotidien", re.IGNORECASE)


def number(text: str) -> float | None:
    """``1``, ``1,5``, ``½``, ``deux``... as a number; ``None`` when not a number."""
    word = text.strip().lower()
    if word in _NUMBER_WORDS:
        return _NUMBER_WORDS[word]
    try:
        return float(word.replace(",", "."))
    except ValueError:
        return None


def unit_name(written: str) -> str:
    """The record's name of a unit as written (``cp`` → ``comprimé``)."""
    for pattern, name in _UNITS:
        if re.fullmatch(pattern, written.strip(), re.IGNORECASE):
            return name
    return written.strip().lower()


def _duration_unit(written: str) -> str:
    word = written.lower().rstrip(".")
    if word.startswith("s"):
        return "week"
    if word.startswith("m"):
        return "month"
    return "day"


def parse_posology(text: str) -> ParsedPosology:
    """Read a French posology (« 1 cp matin et soir pdt 7j », « QSP 3 mois », « 2 gélules 3
    fois par jour », « 1 sachet le soir si besoin ») into structured fields.

    Only what is written is returned: « 2 cp par jour » gives the dose and no number of
    intakes (the split over the day is not written), and an unreadable part stays ``None``.
    """
    clean = " ".join(text.replace("’", "'").split())
    dose: float | None = None
    unit: str | None = None
    times: list[TimeOfDay] = []
    per_day: float | None = None

    pattern = _PATTERN_DOSES.search(clean)
    if pattern:
        slots: list[TimeOfDay] = ["morning", "noon", "evening", "bedtime"]
        amounts = [number(g) if g else None for g in pattern.groups()]
        taken = [(slot, a) for slot, a in zip(slots, amounts, strict=True) if a]
        if taken:
            times = [slot for slot, _ in taken]
            per_day = float(len(times))
            if len({a for _, a in taken}) == 1:
                dose = taken[0][1]
    for match in _DOSE.finditer(clean):
        value = number(match.group(1))
        if value is None or value <= 0:
            continue
        # "3 fois" is not a dose; a frequency pattern also starts with a number.
        dose, unit = (dose if dose is not None and pattern else value), unit_name(match.group(2))
        break
    for regex, slot in _TIMES:
        if regex.search(clean) and slot not in times:
            times.append(slot)
    if "evening" in times and "bedtime" in times and _EVENING_BEDTIME.search(clean):
        times.remove("evening")  # « le soir au coucher » is one intake
    times.sort(key=_ORDER.__getitem__)
    freq = _FREQ.search(clean)
    every = _EVERY_HOURS.search(clean)
    if freq and (value := number(freq.group(1))):
        per_day = value
    elif every and int(every.group(1)) > 0:
        per_day = round(24 / int(every.group(1)), 2)
    elif times:
        per_day = float(len(times))
    elif dose is not None and dose <= 1 and _PER_DAY_ONCE.search(clean):
        per_day = 1.0

    duration_value: int | None = None
    duration_unit: str | None = None
    for found in _DURATION.finditer(clean):
        value = number(found.group(1))
        if value is None or value < 1 or value != int(value):
            continue
        duration_value, duration_unit = int(value), _duration_unit(found.group(2))
        break
    qsp = _QSP.search(clean)
    renew = _RENEW.search(clean)
    renewals: int | None = None
    if renew and renew.group(1) and (count := number(renew.group(1))) is not None:
        renewals = int(count)
    return ParsedPosology(
        dose=dose,
        unit=unit,
        per_day=per_day,
        times=tuple(times),
        duration_value=duration_value,
        duration_unit=duration_unit,  # type: ignore[arg-type]
        as_needed=bool(_AS_NEEDED.search(clean)),
        quantity=" ".join(qsp.group(0).split()) if qsp else None,
        renewals=renewals,
        renewable=renew is not None,
        non_substitutable=bool(_NON_SUBSTITUTABLE.search(clean)),
    )


def looks_like_posology(text: str) -> bool:
    """Whether a line carries posology words (a dose, a time of day, a frequency...)."""
    parsed = parse_posology(text)
    return bool(
        parsed.dose is not None
        or parsed.times
        or parsed.per_day
        or parsed.duration_value
        or parsed.as_needed
        or parsed.renewable
        or parsed.quantity
    )


# --------------------------------------------------------------------------- strength

_STRENGTH = re.compile(
    r"(\d+(?:[.,]\d+)?)\s*(mg|g|µg|microgrammes?|mcg|ug|ui|u\.i\.|unités?|%|ml|mmol)"
    r"(?:\s*/\s*(\d+(?:[.,]\d+)?)?\s*(ml|g|dose|h|24\s*h))?(?![\w])",
    re.IGNORECASE,
)
_ONE_STRENGTH = re.compile(r"(\d+(?:[.,]\d+)?)\s*(mg|g|µg|ui|%|ml)", re.IGNORECASE)
_MORE_STRENGTH = re.compile(
    r"(?:\s*/\s*\d+(?:[.,]\d+)?\s*(?:mg|g|µg|ui|%|ml)(?![\w]))+", re.IGNORECASE
)
_MASS_MG = {"mg": 1.0, "g": 1000.0, "µg": 0.001, "mcg": 0.001, "ug": 0.001}


def parse_strength(text: str) -> str | None:
    """The first strength written (« 1000 mg », « 2,5 mg/ml »), normalised; else ``None``."""
    found = _STRENGTH.search(text)
    if not found:
        return None
    value, unit = found.group(1).replace(",", "."), found.group(2).lower()
    unit = {"microgramme": "µg", "microgrammes": "µg", "mcg": "µg", "ug": "µg"}.get(unit, unit)
    unit = {"u.i.": "UI", "ui": "UI", "unité": "UI", "unités": "UI"}.get(unit, unit)
    if value.endswith(".0"):
        value = value[:-2]
    strength = f"{value.replace('.', ',')} {unit}"
    if found.group(4):
        per = found.group(3).replace(".", ",") + " " if found.group(3) else ""
        strength += f"/{per}{found.group(4).lower()}"
    more = _MORE_STRENGTH.match(text, found.end())
    if more:
        # A combination: « 8 mg/5 mg » (each moiety's strength, in the name's order).
        strength += "/" + "/".join(
            f"{v.replace('.', ',')} {u.lower()}" for v, u in _ONE_STRENGTH.findall(more.group(0))
        )
    return strength


def strength_mg(strength: str | None) -> float | None:
    """A mass strength in mg (« 1 g » → 1000) to compare spellings; ``None`` otherwise."""
    if not strength:
        return None
    found = _STRENGTH.match(strength.strip())
    if not found or found.group(4) or found.end() != len(strength.strip()):
        return None  # a concentration or a combination is compared as written
    unit = found.group(2).lower()
    unit = {"microgramme": "µg", "microgrammes": "µg"}.get(unit, unit)
    factor = _MASS_MG.get(unit)
    if factor is None:
        return None
    return float(found.group(1).replace(",", ".")) * factor


def _same_strength(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    ma, mb = strength_mg(a), strength_mg(b)
    if ma is not None and mb is not None:
        return abs(ma - mb) < 1e-6
    return fold(a).replace(" ", "") == fold(b).replace(" ", "")


# --------------------------------------------------------------------------- catalog


def name_head(name: str) -> str:
    """A catalog name without its form: BDPM separates them by a comma and a space (a
    decimal comma has none: « ALPRAZOLAM VIATRIS 0,50 mg, comprimé sécable »)."""
    return re.split(r",\s", name, maxsplit=1)[0]


def brand_of(name: str) -> str:
    """The part of a catalog name before its strength or form: « DOLIPRANE 1000 mg,
    comprimé » → ``doliprane``; « AMOXICILLINE BIOGARAN 500 mg » → ``amoxicilline biogaran``."""
    head = name_head(name)
    found = re.search(r"\s\d", head)
    if found:
        head = head[: found.start()]
    # « A/B », « A / B » and « A B » are one brand (the catalog spells combinations all ways).
    return fold(re.sub(r"[^\w\s'-]", " ", head))


def _written_product(text: str) -> str:
    """The product part of a written line: the words before the first digit."""
    found = re.search(r"\d", text)
    head = text[: found.start()] if found else text
    return fold(re.sub(r"[^\w\s'-]", " ", head))


@dataclass
class CatalogIndex:
    """Every speciality by brand and every substance, for fuzzy lookups of written lines."""

    entries: Sequence[CatalogEntry]
    by_brand: dict[str, list[CatalogEntry]] = field(default_factory=dict)
    by_substance: dict[str, list[CatalogEntry]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for entry in self.entries:
            self.by_brand.setdefault(brand_of(entry.name), []).append(entry)
            if len(entry.substances) == 1:
                self.by_substance.setdefault(fold(entry.substances[0][0]), []).append(entry)
        self.keys = sorted(set(self.by_brand) | set(self.by_substance))


def _entry_strength(entry: CatalogEntry) -> str | None:
    strength = parse_strength(name_head(entry.name))
    if strength is None and len(entry.substances) == 1:
        strength = parse_strength(entry.substances[0][1])
    return strength


_FORM_ABBREVIATIONS = {
    "cp": "comprime",
    "cpr": "comprime",
    "comp": "comprime",
    "gel": "gelule",
    "sach": "sachet",
    "sol": "solution",
    "susp": "suspension",
    "inj": "injectable",
}
_FORM_VOCABULARY = {
    "comprime",
    "gelule",
    "sachet",
    "effervescent",
    "secable",
    "pellicule",
    "orodispersible",
    "dispersible",
    "gastro-resistant",
    "liberation",
    "prolongee",
    "modifiee",
    "buvable",
    "injectable",
    "capsule",
    "molle",
    "lyophilisat",
    "sirop",
    "suspension",
    "solution",
    "poudre",
}
_FORM_FILLERS = {"de", "en", "a", "pour", "et", "ou", "le", "la", "l'"}


def _form_words(text: str) -> set[str]:
    words = {w.rstrip(".s") for w in re.split(r"[\s,;:/()]+", fold(text)) if w}
    return {_FORM_ABBREVIATIONS.get(w, w) for w in words} - _FORM_FILLERS - {""}


_NUMBER_AFTER = re.compile(r"(?<![\d,.])(\d+)(?![\d,.])")


def _digits(strength: str | None) -> str:
    return re.sub(r"\D", "", strength or "")


def _form_score(written: str, form: str) -> float:
    """How well a catalog form fits what is written: the share of the form's words that are
    written, less the written form words the catalog form lacks (« cp effervescent » does
    not fit a plain « comprimé »)."""
    wanted = _form_words(form)
    if not wanted:
        return 0.0
    have = _form_words(written)
    found = sum(1 for word in wanted if any(h[:5] == word[:5] for h in have))
    extra = sum(
        1
        for h in have
        if h in {w.rstrip("s") for w in _FORM_VOCABULARY}
        and not any(h[:5] == word[:5] for word in wanted)
    )
    return found / len(wanted) - 0.5 * extra


def match_line(index: CatalogIndex, text: str) -> Match | None:
    """The catalog's best reading of a written product line, ``None`` below the threshold.

    The written words before the strength are compared to every brand and substance name
    (rapidfuzz); a brand yields a speciality (CIS), chosen among the brand's entries by
    strength then form; a substance alone yields the substance (no CIS: which generic the
    pharmacy dispenses is not written).
    """
    written = _written_product(text)
    if len(written) < 3 or not index.keys:
        return None
    best = process.extractOne(
        written, index.keys, scorer=fuzz.ratio, score_cutoff=MATCH_THRESHOLD * 100
    )
    prefix = process.extractOne(
        written,
        index.keys,
        scorer=fuzz.partial_ratio,
        processor=None,
        score_cutoff=95,
    )
    if best is None and prefix is not None and len(prefix[0]) >= 5:
        key_words = prefix[0].split()
        written_words = written.split()
        # A brand followed by free words on the line (« Doliprane cp »): compare the brand
        # with the same number of leading written words.
        head = " ".join(written_words[: len(key_words)])
        score = fuzz.ratio(head, prefix[0])
        if score >= MATCH_THRESHOLD * 100:
            best = (prefix[0], score, prefix[2])
    if best is None:
        return None
    key, score = str(best[0]), float(best[1]) / 100
    strength = parse_strength(text)
    if key in index.by_brand:
        candidates = index.by_brand[key]
        same = [e for e in candidates if _same_strength(strength, _entry_strength(e))]
        if strength and not same:
            # OCR drops decimal commas (« 12,5 » read « 125 »): the digits alone, when they
            # name exactly one strength of the brand, with a lower score.
            digits = [e for e in candidates if _digits(_entry_strength(e)) == _digits(strength)]
            if len({_entry_strength(e) for e in digits}) == 1:
                same, score = digits, score * 0.9
        if not strength and len({_entry_strength(e) for e in candidates}) == 1:
            same = list(candidates)  # one strength only: nothing to choose
        elif (
            not strength
            and len(written.split()) == len(key.split())  # the number follows the brand
            and (written_number := _NUMBER_AFTER.search(text))
        ):
            # The unit is misread (« 500 ns » for « 500 mg »): the number alone, when it names
            # exactly one strength of the brand, with a lower score.
            digits = [
                e for e in candidates if _digits(_entry_strength(e)) == written_number.group(1)
            ]
            if len({_entry_strength(e) for e in digits}) == 1:
                same, score = digits, score * 0.9
        pool = same
        if not pool:
            # The brand exists, not at this strength: the written strength is kept, no CIS.
            substances = {_substance_label(e) for e in candidates}
            atcs = {e.atc for e in candidates}
            return Match(
                cis=None,
                cip13=None,
                name=None,
                substance=substances.pop() if len(substances) == 1 else None,
                atc=atcs.pop() if len(atcs) == 1 else None,
                strength=strength,
                form=None,
                score=round(score * 0.9, 3),
            )
        ranked = sorted(
            pool, key=lambda e: (-_form_score(text, e.form), len(_form_words(e.form)), e.name)
        )
        entry = ranked[0]
        ambiguous = len(pool) > 1 and _form_score(text, ranked[1].form) == _form_score(
            text, entry.form
        )
        if ambiguous and len({(fold(e.form)) for e in pool}) > 1:
            score *= 0.95
        return Match(
            cis=entry.cis,
            cip13=entry.cip13s[0] if len(entry.cip13s) == 1 else None,
            name=entry.name,
            substance=_substance_label(entry),
            atc=entry.atc,
            strength=strength or _entry_strength(entry),
            form=entry.form or None,
            score=round(score, 3),
        )
    entries = index.by_substance[key]
    atcs = {e.atc for e in entries}
    return Match(
        cis=None,
        cip13=None,
        name=None,
        substance=entries[0].substances[0][0],
        atc=atcs.pop() if len(atcs) == 1 else None,
        strength=strength,
        form=None,
        score=round(score, 3),
    )


def _substance_label(entry: CatalogEntry) -> str | None:
    if not entry.substances:
        return None
    return " + ".join(name for name, _ in entry.substances)


# --------------------------------------------------------------------------- page reading

_DATE_NUM = re.compile(r"\b(\d{1,2})\s*[/.-]\s*(\d{1,2})\s*[/.-]\s*(\d{4}|\d{2})\b")
_MONTHS = {
    "janvier": 1,
    "fevrier": 2,
    "mars": 3,
    "avril": 4,
    "mai": 5,
    "juin": 6,
    "juillet": 7,
    "aout": 8,
    "septembre": 9,
    "octobre": 10,
    "novembre": 11,
    "decembre": 12,
}
_DATE_WORDS = re.compile(r"\b(\d{1,2})(?:er)?\s+([a-z]+)\s+(\d{4})\b")
_RPPS = re.compile(r"(?:rpps|n\s*°?\s*rpps)\D{0,12}((?:\d\s?){11})", re.IGNORECASE)
_ELEVEN = re.compile(r"(?<!\d)(1(?:\s?\d){10})(?!\d)")
_AM = re.compile(r"(?:\bAM\b|assurance\s+maladie|finess|adeli)\D{0,12}((?:\d\s?){9})(?!\d)", re.I)
_DOCTOR = re.compile(r"^\s*(?:dr\.?|docteur|pr\.?|professeur)\s+(.+)$", re.IGNORECASE)
_PATIENT = re.compile(
    r"^\s*(?:patient\(?e?\)?|nom(?:\s+du\s+patient)?|pour)\s*:?\s*(.+)$"
    r"|^\s*((?:m\.|mme|mlle|monsieur|madame)\s+.+)$",
    re.IGNORECASE,
)
_AGE = re.compile(r"\b(\d{1,3})\s*ans\b", re.IGNORECASE)
_WEIGHT = re.compile(r"\b(\d{1,3}(?:[.,]\d)?)\s*kg\b", re.IGNORECASE)
_SPECIALTIES = (
    "médecin généraliste",
    "médecine générale",
    "cardiologue",
    "cardiologie",
    "pédiatre",
    "pédiatrie",
    "psychiatre",
    "psychiatrie",
    "dermatologue",
    "dermatologie",
    "gériatre",
    "gériatrie",
    "rhumatologue",
    "rhumatologie",
    "endocrinologue",
    "endocrinologie",
    "pneumologue",
    "pneumologie",
    "neurologue",
    "neurologie",
    "gynécologue",
    "gynécologie",
    "ophtalmologue",
    "ophtalmologie",
    "chirurgien-dentiste",
    "sage-femme",
)
_HEADER_WORDS = re.compile(
    r"\b(?:tel|tél|téléphone|fax|rue|avenue|boulevard|cedex|ordonnance|rpps|finess|email|"
    r"adresse|né\(?e?\)?\s+le|cabinet|consultation|signature|cachet)\b",
    re.IGNORECASE,
)


def parse_date(text: str) -> date | None:
    """The first valid date in a line (« 12/03/2025 », « 12 mars 2025 »), else ``None``."""
    for found in _DATE_NUM.finditer(text):
        day, month, year = (int(g) for g in found.groups())
        if year < 100:
            year += 2000
        try:
            return date(year, month, day)
        except ValueError:
            continue
    for found in _DATE_WORDS.finditer(fold(text)):
        month_no = _MONTHS.get(found.group(2))
        if month_no:
            try:
                return date(int(found.group(3)), month_no, int(found.group(1)))
            except ValueError:
                continue
    return None


def valid_rpps(text: str) -> str | None:
    """An RPPS written on the page: after « RPPS », else any 11-digit number starting with 1,
    kept only when its Luhn key is right (an OCR slip is not turned into another doctor)."""
    for regex in (_RPPS, _ELEVEN):
        for found in regex.finditer(text):
            digits = re.sub(r"\s", "", found.group(1))
            if rpps_is_valid(digits):
                return digits
    return None


@dataclass(frozen=True)
class ReadLine:
    """One prescription line assembled from the page: product line plus posology lines."""

    text: str
    product_text: str
    match: Match | None
    posology: ParsedPosology
    ocr_confidence: float
    page: int | None = None
    box: tuple[float, float, float, float] | None = None
    """Where the line is on its page: (left, top, right, bottom) as fractions of the page
    size, for the reviewer's side-by-side view; ``None`` from a PDF text layer."""


@dataclass(frozen=True)
class ReadPage:
    """Everything :func:`read_prescription` found on the pages."""

    prescriber_name: str | None = None
    prescriber_rpps: str | None = None
    prescriber_am: str | None = None
    prescriber_specialty: str | None = None
    patient_name: str | None = None
    patient_age: int | None = None
    patient_weight_kg: float | None = None
    prescribed_on: date | None = None
    renewals: int | None = None
    non_substitutable_all: bool = False
    lines: tuple[ReadLine, ...] = ()
    confidences: Mapping[str, float] = field(default_factory=dict)


def _line_boxes(page: PageText) -> dict[int, tuple[int, int, int, int]]:
    """Pixel box (left, top, right, bottom) of each OCR'd line of a page."""
    boxes: dict[int, tuple[int, int, int, int]] = {}
    for word in page.words:
        right, bottom = word.left + word.width, word.top + word.height
        old = boxes.get(word.line)
        if old is not None:
            right, bottom = max(old[2], right), max(old[3], bottom)
        boxes[word.line] = (
            (word.left, word.top, right, bottom)
            if old is None
            else (min(old[0], word.left), min(old[1], word.top), right, bottom)
        )
    return boxes


def _union(
    boxes: list[tuple[int, int, int, int]], size: tuple[int, int] | None
) -> tuple[float, float, float, float] | None:
    if not boxes or not size or not size[0] or not size[1]:
        return None
    width, height = size
    return (
        round(min(b[0] for b in boxes) / width, 4),
        round(min(b[1] for b in boxes) / height, 4),
        round(max(b[2] for b in boxes) / width, 4),
        round(max(b[3] for b in boxes) / height, 4),
    )


@dataclass
class _Item:
    product_text: str
    match: Match
    posology: list[str]
    confidences: list[float]
    page: int
    boxes: list[tuple[int, int, int, int]]


def _conf(values: Iterable[float]) -> float:
    items = list(values)
    return round(min(items) / 100, 3) if items else 0.0


def read_prescription(pages: Sequence[PageText], index: CatalogIndex) -> ReadPage:
    """Read prescriber, patient, date and lines out of the pages' text lines.

    A line whose leading words match the catalog starts a prescription line; the lines
    after it that read as posology belong to it, until the next product.
    """
    prescriber_name = rpps = am = specialty = patient = None
    age: int | None = None
    weight: float | None = None
    day: date | None = None
    renewals: int | None = None
    all_ns = False
    conf: dict[str, float] = {}
    items: list[_Item] = []
    all_text = "\n".join(line for page in pages for line in page.lines)
    rpps = valid_rpps(all_text)
    if rpps:
        conf["prescriber_rpps"] = 1.0
    for page in pages:
        line_boxes = _line_boxes(page)
        for number, (text, confidence) in enumerate(
            zip(page.lines, page.line_confidences, strict=True)
        ):
            stripped = text.strip()
            if not stripped:
                continue
            folded = fold(stripped)
            if prescriber_name is None and (doctor := _DOCTOR.match(stripped)):
                prescriber_name = " ".join(doctor.group(0).split())
                conf["prescriber_name"] = _conf([confidence])
                continue
            if specialty is None and any(fold(s) in folded for s in _SPECIALTIES):
                specialty = stripped
                conf["prescriber_specialty"] = _conf([confidence])
                continue
            if am is None and (found_am := _AM.search(stripped)):
                am = re.sub(r"\s", "", found_am.group(1))
                conf["prescriber_am"] = _conf([confidence])
                continue
            if patient is None and (who := _PATIENT.match(stripped)):
                name = who.group(1) or who.group(2)
                name = re.split(r",|\(|\bné|\b\d", name)[0].strip(" :-")
                if name and not _HEADER_WORDS.search(name):
                    patient = " ".join(name.split())
                    conf["patient_name"] = _conf([confidence])
                    if (years := _AGE.search(stripped)) and int(years.group(1)) <= 130:
                        age = int(years.group(1))
                    if (kg := _WEIGHT.search(stripped)) and 0 < float(
                        kg.group(1).replace(",", ".")
                    ) <= 400:
                        weight = float(kg.group(1).replace(",", "."))
                    continue
            if age is None and (years := _AGE.search(stripped)) and int(years.group(1)) <= 130:
                age = int(years.group(1))
            if weight is None and (kg := _WEIGHT.search(stripped)):
                value = float(kg.group(1).replace(",", "."))
                if 0 < value <= 400 and not _STRENGTH.search(stripped.replace("kg", "")):
                    weight = value
            if day is None and not re.search(r"\bn(?:é|e)e?\b", folded):
                found_day = parse_date(stripped)
                if found_day is not None:
                    day = found_day
                    conf["prescribed_on"] = _conf([confidence])
                    continue
            if _HEADER_WORDS.search(stripped) and not items:
                continue
            match = match_line(index, stripped)
            if match is not None:
                box = line_boxes.get(number)
                items.append(
                    _Item(stripped, match, [], [confidence], page.number, [box] if box else [])
                )
                continue
            parsed = parse_posology(stripped)
            if items and (looks_like_posology(stripped) or parsed.non_substitutable):
                # « non substituable » under a line is that line's mention.
                items[-1].posology.append(stripped)
                if (box := line_boxes.get(number)) and items[-1].page == page.number:
                    items[-1].boxes.append(box)
                items[-1].confidences.append(confidence)
                continue
            if parsed.renewals is not None and renewals is None:
                renewals = parsed.renewals
            if parsed.non_substitutable:
                all_ns = True
    sizes = {page.number: (page.width, page.height) for page in pages}
    lines: list[ReadLine] = []
    for item in items:
        # The posology can follow the product on its own line: read after the strength.
        posology_text = " ".join([_after_product(item.product_text), *item.posology]).strip()
        lines.append(
            ReadLine(
                text=" ".join([item.product_text, *item.posology]),
                product_text=item.product_text,
                match=item.match,
                posology=parse_posology(posology_text),
                ocr_confidence=min(item.confidences),
                page=item.page,
                box=_union(item.boxes, sizes.get(item.page)),
            )
        )
    for line in lines:
        if renewals is None and line.posology.renewals is not None:
            renewals = line.posology.renewals  # « à renouveler n fois » covers the prescription
    return ReadPage(
        prescriber_name=prescriber_name,
        prescriber_rpps=rpps,
        prescriber_am=am,
        prescriber_specialty=specialty,
        patient_name=patient,
        patient_age=age,
        patient_weight_kg=weight,
        prescribed_on=day,
        renewals=renewals,
        non_substitutable_all=all_ns,
        lines=tuple(lines),
        confidences=conf,
    )


_FORM_WORDS = re.compile(
    r"^[\s,.;:-]*(?:(?:comprim(?:e|é)s?|g(?:e|é)lules?|sachets?(?:-doses?)?|solution|buvable|"
    r"injectable|en|pour|poudre|sirop|suspension|pellicul(?:e|é)s?|s(?:e|é)cables?|"
    r"effervescents?|orodispersibles?|(?:a|à)|lib(?:e|é)ration|prolong(?:e|é)e|modifi(?:e|é)e|"
    r"gastro-r(?:e|é)sistants?|cr(?:e|è)me|pommade|gel|collyre|inhal(?:e|é)e?|dose|flacon|"
    r"bo(?:i|î)te|de|ampoules?|suppositoires?)\b[\s,.;:-]*)*",
    re.IGNORECASE,
)


def _after_product(text: str) -> str:
    """What follows the product and its strength/form on the same line (« DOLIPRANE 1000 mg
    cp : 1 cp 3x/j » → « : 1 cp 3x/j »); the whole line when there is no strength."""
    if " : " in text:
        return text.split(" : ", 1)[1].strip()
    strength = _STRENGTH.search(text)
    if not strength:
        return ""
    rest = text[strength.end() :]
    more = _MORE_STRENGTH.match(rest)
    if more:
        rest = rest[more.end() :]
    rest = _FORM_WORDS.sub("", rest, count=1)
    return rest.strip(" ,;:-")


# --------------------------------------------------------------------------- outputs


def posology_out(parsed: ParsedPosology) -> PosologyOut:
    return PosologyOut(
        dose=parsed.dose,
        unit=parsed.unit,
        per_day=parsed.per_day,
        times=list(parsed.times) or None,
        duration_days=parsed.duration_days,
        as_needed=parsed.as_needed,
    )


def line_confidence(line: ReadLine) -> float:
    """The lower of the OCR confidence and the catalog match (0 when unmatched)."""
    match = line.match.score if line.match else 0.0
    return round(min(match, line.ocr_confidence / 100), 3)


def extraction(source: str, read: ReadPage, pages: int, ocr_ms: int) -> Extraction:
    """The contract object of ``hygie prescriptions extract``."""
    return Extraction(
        source=source,
        prescriber=PrescriberOut(name=read.prescriber_name, rpps=read.prescriber_rpps),
        date=read.prescribed_on.isoformat() if read.prescribed_on else None,
        patient=PersonOut(name=read.patient_name),
        lines=[
            LineOut(
                text=line.text,
                cis=line.match.cis if line.match else None,
                cip13=line.match.cip13 if line.match else None,
                substance=line.match.substance if line.match else None,
                atc=line.match.atc if line.match else None,
                strength=(line.match.strength if line.match else None)
                or parse_strength(line.product_text),
                posology=posology_out(line.posology),
                confidence=line_confidence(line),
            )
            for line in read.lines
        ],
        pages=pages,
        ocr_ms=ocr_ms,
    )


def _field(value: object, confidence: float) -> Field:
    if value is None:
        return Field()
    return Field(value=str(value), confidence=round(max(0.0, min(confidence, 1.0)), 3))


def draft_content(read: ReadPage) -> DraftContent:
    """The reviewable draft of what was read (confidences per field and per line)."""
    conf = read.confidences
    lines = []
    for line in read.lines:
        match = line.match
        posology = line.posology
        lines.append(
            DraftLine(
                text=line.text[:2000],
                cis=match.cis if match else None,
                cip13=match.cip13 if match else None,
                label=((match.name if match and match.name else line.product_text) or "")[:200]
                or None,
                substance=(match.substance or "")[:200] or None if match else None,
                atc=match.atc if match and match.atc and len(match.atc) <= 7 else None,
                strength=((match.strength if match else None) or parse_strength(line.product_text)),
                form=match.form[:200] if match and match.form else None,
                dose=posology.dose if posology.dose and posology.dose <= 100_000 else None,
                unit=posology.unit,
                per_day=posology.per_day if posology.per_day and posology.per_day <= 48 else None,
                times=posology.times,
                duration_value=posology.duration_value
                if posology.duration_value and posology.duration_value <= 3650
                else None,
                duration_unit=posology.duration_unit
                if posology.duration_value and posology.duration_value <= 3650
                else None,
                as_needed=posology.as_needed,
                quantity=posology.quantity,
                non_substitutable=posology.non_substitutable or read.non_substitutable_all,
                match_score=match.score if match else 0.0,
                confidence=line_confidence(line),
                page=line.page,
                box=line.box,
            )
        )
    renewals = read.renewals
    for line in read.lines:
        if renewals is None and line.posology.renewals is not None:
            renewals = line.posology.renewals
    return DraftContent(
        patient_name=_field(read.patient_name, conf.get("patient_name", 0)),
        patient_age=read.patient_age,
        patient_weight_kg=read.patient_weight_kg,
        prescriber_name=_field(read.prescriber_name, conf.get("prescriber_name", 0)),
        prescriber_rpps=_field(read.prescriber_rpps, conf.get("prescriber_rpps", 0)),
        prescriber_am=_field(read.prescriber_am, conf.get("prescriber_am", 0)),
        prescriber_specialty=_field(read.prescriber_specialty, conf.get("prescriber_specialty", 0)),
        prescribed_on=_field(
            read.prescribed_on.isoformat() if read.prescribed_on else None,
            conf.get("prescribed_on", 0),
        ),
        renewals=renewals if renewals is None or 0 <= renewals <= 12 else None,
        lines=tuple(lines),
    )


# --------------------------------------------------------------------------- CSV

CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "prescription": ("ordonnance", "num_ordonnance", "prescription_id", "id_ordonnance"),
    "date": ("date", "date_prescription", "date_ordonnance", "prescribed_on"),
    "prescriber_name": ("prescripteur", "medecin", "médecin", "prescriber"),
    "prescriber_rpps": ("rpps", "rpps_prescripteur", "prescriber_rpps"),
    "patient_name": ("patient", "nom_patient", "patient_name"),
    "product": ("produit", "medicament", "médicament", "libelle", "libellé", "designation"),
    "cip13": ("cip13", "cip", "code_cip", "ean13"),
    "cis": ("cis", "code_cis"),
    "posology": ("posologie", "posology", "poso"),
    "duration": ("duree", "durée", "duration"),
    "quantity": ("quantite", "quantité", "qte", "quantity"),
}
"""Accepted header names per field (case and accents ignored): the column mapping of the
pharmacy-software export, see docs/document_import.md."""

MAX_CSV_ROWS = 10_000


class CsvError(ValueError):
    """A CSV file that cannot be read (message in French, for the counter)."""


@dataclass(frozen=True)
class CsvRow:
    prescription: str
    date: str | None
    prescriber_name: str | None
    prescriber_rpps: str | None
    patient_name: str | None
    product: str | None
    cip13: str | None
    cis: str | None
    posology: str | None


class _Semicolon(csv.excel):
    delimiter = ";"


def read_csv(text: str) -> list[CsvRow]:
    """Rows of a pharmacy-software export (``;`` or ``,`` separated, header on line 1)."""
    dialect: type[csv.Dialect] = _Semicolon
    # One column, or no separator found: French exports use « ; ».
    with contextlib.suppress(csv.Error):
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=";,\t")
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise CsvError("fichier CSV vide") from None
    except csv.Error as error:
        raise CsvError(f"fichier CSV illisible : {error}") from None
    folded = [fold(h).replace(" ", "_") for h in header]
    columns: dict[str, int] = {}
    for key, names in CSV_COLUMNS.items():
        for name in names:
            if fold(name) in folded:
                columns[key] = folded.index(fold(name))
                break
    if "product" not in columns and "cip13" not in columns and "cis" not in columns:
        raise CsvError(
            "colonnes manquantes : il faut au moins « produit », « cip13 » ou « cis » "
            "(voir la correspondance des colonnes dans la documentation)"
        )
    rows: list[CsvRow] = []
    try:
        for number_, record in enumerate(reader, start=2):
            if len(rows) >= MAX_CSV_ROWS:
                raise CsvError(f"trop de lignes (plus de {MAX_CSV_ROWS})")
            if not any(cell.strip() for cell in record):
                continue

            def cell(key: str, record: list[str] = record) -> str | None:
                position = columns.get(key)
                if position is None or position >= len(record):
                    return None
                return record[position].strip() or None

            posology = " ".join(p for p in (cell("posology"), cell("duration")) if p) or None
            rows.append(
                CsvRow(
                    prescription=cell("prescription") or f"ligne-{number_}",
                    date=cell("date"),
                    prescriber_name=cell("prescriber_name"),
                    prescriber_rpps=cell("prescriber_rpps"),
                    patient_name=cell("patient_name"),
                    product=cell("product"),
                    cip13=cell("cip13"),
                    cis=cell("cis"),
                    posology=posology,
                )
            )
    except csv.Error as error:
        raise CsvError(f"fichier CSV illisible : {error}") from None
    return rows


def csv_pages(rows: Sequence[CsvRow]) -> dict[str, list[CsvRow]]:
    """Rows grouped by prescription (one draft each), in file order."""
    grouped: dict[str, list[CsvRow]] = {}
    for row in rows:
        grouped.setdefault(row.prescription, []).append(row)
    return grouped
