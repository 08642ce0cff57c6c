"""Clinical rules as data: the TOML files of ``data/``, their schema, and compiled indexes.

Every file is decoded against a frozen msgspec schema (an unknown field or a wrong type is a
load error, not a silent default) and every rule must cite its source. Loading compiles
ATC-prefix and ICD-10-prefix indexes, so evaluating a patient looks up the few candidate
rules of their drugs and conditions instead of scanning every rule. Pure but for ``load``.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Literal, TypeVar

import msgspec

DATA_DIR = Path(__file__).resolve().parent / "data"
STOPP_START_SOURCE = (
    "O'Mahony D, Cherubini A, Guiteras AR, et al. STOPP/START criteria for potentially "
    "inappropriate prescribing in older people: version 3. Eur Geriatr Med 2023;14:625-632"
)

_T = TypeVar("_T")
RuleSeverity = Literal["high", "moderate", "low"]
Op = Literal["<", "<=", ">", ">="]


class LabTest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``code`` is a LOINC code, or ``renal`` (the kidney function the engine estimated)."""

    code: str
    op: Op
    value: float
    max_age_days: int = 365
    if_conditions: tuple[str, ...] = ()
    """ICD-10 prefixes: the threshold applies only to a patient with one of them (e.g. the
    lower blood-pressure threshold of START A4 for diabetics); empty: to every patient."""


class Criterion(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A STOPP or START criterion, evaluated from codes (see docs/analysis.md for semantics).

    STOPP fires when a ``drugs`` prefix is present (or, with no ``drugs``, on conditions),
    every ``also_drugs`` group has a member, a ``conditions`` prefix is present (when
    listed), no ``without_drugs`` / ``without_conditions`` match, and the labs hold.
    START fires on its ``conditions`` (or ``drugs``, or with neither on its labs: then it is
    a candidate for every patient) when none of ``start_atc`` is taken. Every
    ``also_conditions`` group must have a member too; a criterion for one ``sex`` is not
    evaluated when the record does not say the patient's.
    """

    id: str
    kind: Literal["stopp", "start"]
    severity: RuleSeverity
    status: Literal["encoded", "partial"]
    summary: str
    message: str
    recommendation: str
    gp: str
    label_fr: str = ""
    """A short French label of the criterion (cards, lists at the counter)."""
    drugs: tuple[str, ...] = ()
    except_drugs: tuple[str, ...] = ()
    also_drugs: tuple[tuple[str, ...], ...] = ()
    without_drugs: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    also_conditions: tuple[tuple[str, ...], ...] = ()
    """Groups of ICD-10 prefixes each of which must also be present (e.g. constipation
    with diverticulosis, START D2)."""
    without_conditions: tuple[str, ...] = ()
    sex: Literal["male", "female"] | None = None
    """The criterion applies to this sex only (Patient.gender)."""
    labs: tuple[LabTest, ...] = ()
    labs_any: tuple[LabTest, ...] = ()
    or_conditions: tuple[str, ...] = ()
    """ICD-10 prefixes that satisfy the ``labs_any`` arm in place of a lab value (e.g. a heart
    block in place of a heart rate below 50/min)."""
    or_drugs: tuple[str, ...] = ()
    """ATC prefixes of other drugs that satisfy the ``labs_any`` arm in place of a lab value
    (e.g. a heart-rate-lowering drug taken with an acetylcholinesterase inhibitor)."""
    min_age: int = 65
    max_age: int | None = None
    min_days: int = 0
    min_daily_mg: float | None = None
    start_atc: tuple[str, ...] = ()
    partial_reason: str = ""
    doubt: str = ""
    source: str = STOPP_START_SOURCE
    text: str = ""
    """The criterion's wording as published, when it was read in a source (``text_source``);
    empty when only the content is known (then ``doubt`` says so)."""
    text_source: str = ""
    same_finding_as: str = ""
    """Another criterion of the source that flags the same situation (e.g. START H2 and
    STOPP L2 on opioids without a laxative): when both fire, one finding cites both."""

    @property
    def section(self) -> str:
        """The section letter of the id (``STOPP v3 D5`` → ``D``)."""
        return self.id.rsplit(" ", 1)[-1][:1]


class NotEncoded(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A criterion the bundle cannot feed: reported in every analysis' ``not_evaluated``."""

    id: str
    reason: str
    reason_fr: str = ""
    """What is missing, in French: shown to the counter and printed in the GP's synthesis
    (``reason`` is the English explanation of the docs' table)."""
    summary: str = ""
    label_fr: str = ""
    text: str = ""
    text_source: str = ""
    doubt: str = ""

    @property
    def section(self) -> str:
        return self.id.rsplit(" ", 1)[-1][:1]


class StoppStartFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: str
    source: str
    criterion: tuple[Criterion, ...] = ()
    not_encoded: tuple[NotEncoded, ...] = ()


class AcbDrug(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    atc: tuple[str, ...]
    score: Literal[1, 2, 3]


class AcbFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: str
    source: str
    threshold: int
    stopp_rule: str
    stopp_doubt: str
    drug: tuple[AcbDrug, ...]


class RenalBand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Applies when the kidney function is below ``below`` mL/min (and at or above ``from``)."""

    below: float
    action: Literal["contraindicated", "reduce", "avoid", "monitor"]
    advice: str
    max_daily_mg: float | None = None
    at_least: float = 0.0


class RenalDrug(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    atc: tuple[str, ...]
    source: str
    bands: tuple[RenalBand, ...]
    estimate: Literal["cockcroft-gault", "egfr"] = "cockcroft-gault"
    doubt: str = ""


class RenalFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: str
    drug: tuple[RenalDrug, ...]


class RedundancyGroup(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """ATC prefixes whose members should not be taken together (one finding per group)."""

    name: str
    prefixes: tuple[str, ...]
    severity: RuleSeverity
    rule: str
    source: str
    message: str
    recommendation: str
    doubt: str = ""


class RedundancyException(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Combinations of standard practice: members of different ``sets`` are not a duplicate."""

    name: str
    sets: tuple[tuple[str, ...], ...]
    source: str


class RedundancyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: str
    rule: str
    source: str
    same_substance_lower_severity: tuple[str, ...]
    level4_excluded: tuple[str, ...]
    group: tuple[RedundancyGroup, ...]
    exception: tuple[RedundancyException, ...] = ()


class AdherenceFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: str
    source: str
    window_days: int
    threshold: float
    high_below: float
    min_gap_days: int
    min_dispenses: int


class RuleError(Exception):
    """A rules file does not match its schema or breaks a rule of consistency."""


def _decode(name: str, schema: type[_T]) -> _T:
    path = DATA_DIR / name
    try:
        return msgspec.toml.decode(path.read_bytes(), type=schema)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise RuleError(f"{name}: {exc}") from exc


class RuleSet:
    """All rules, loaded once and indexed (ATC prefix → criteria, ICD-10 prefix → criteria)."""

    def __init__(
        self,
        stopp_start: StoppStartFile,
        acb: AcbFile,
        renal: RenalFile,
        redundancy: RedundancyFile,
        adherence: AdherenceFile,
    ) -> None:
        self.stopp_start = stopp_start
        self.acb = acb
        self.renal = renal
        self.redundancy = redundancy
        self.adherence = adherence
        ids = [c.id for c in stopp_start.criterion] + [n.id for n in stopp_start.not_encoded]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise RuleError(f"stopp_start.toml + start.toml: duplicate ids {sorted(dupes)}")
        known = set(ids)
        self.same_finding_as = {
            c.id: c.same_finding_as for c in stopp_start.criterion if c.same_finding_as
        }
        for crit_id, twin in self.same_finding_as.items():
            if twin not in known or twin == crit_id:
                raise RuleError(f"{crit_id}: same_finding_as names an unknown criterion {twin!r}")
        labels = [(c.id, c.label_fr) for c in stopp_start.criterion] + [
            (n.id, n.label_fr) for n in stopp_start.not_encoded
        ]
        for crit_id, label in labels:
            if not label:
                raise RuleError(f"{crit_id}: a criterion needs its short French label")
        for skipped_fr in stopp_start.not_encoded:
            if not skipped_fr.reason_fr:
                raise RuleError(f"{skipped_fr.id}: a not-evaluable criterion needs its reason_fr")
        for crit in stopp_start.criterion:
            if crit.status == "partial" and not crit.partial_reason:
                raise RuleError(f"{crit.id}: a partial criterion must say what is not checked")
            if not (crit.drugs or crit.conditions or crit.labs or crit.labs_any):
                raise RuleError(f"{crit.id}: nothing to evaluate (no drugs, conditions, labs)")
        for skipped in stopp_start.not_encoded:
            if not skipped.reason:
                raise RuleError(f"{skipped.id}: a criterion not evaluated must say why")
        self.by_atc: dict[str, list[Criterion]] = defaultdict(list)
        self.by_icd: dict[str, list[Criterion]] = defaultdict(list)
        self.always: list[Criterion] = []
        for crit in stopp_start.criterion:
            if crit.kind == "start" and not crit.start_atc:
                raise RuleError(f"{crit.id}: a START criterion needs start_atc")
            if crit.drugs:
                for prefix in crit.drugs:
                    self.by_atc[prefix].append(crit)
            elif crit.conditions:
                for prefix in crit.conditions:
                    self.by_icd[prefix].append(crit)
            else:
                self.always.append(crit)
        self.acb_scores: dict[str, AcbDrug] = {}
        for item in acb.drug:
            for code in item.atc:
                self.acb_scores[code] = item
        self.renal_by_atc: dict[str, RenalDrug] = {}
        for drug in renal.drug:
            if not drug.source:
                raise RuleError(f"renal.toml: {drug.name} has no source")
            for code in drug.atc:
                self.renal_by_atc[code] = drug

    @staticmethod
    def _prefix_lookup(index: dict[str, list[Criterion]], code: str) -> list[Criterion]:
        found: list[Criterion] = []
        for n in range(1, len(code) + 1):
            found.extend(index.get(code[:n], ()))
        return found

    def criteria_for(self, atc_codes: set[str], icd_codes: set[str]) -> list[Criterion]:
        """Candidate criteria for these drugs and conditions, each once, in file order."""
        seen: dict[str, Criterion] = {c.id: c for c in self.always}
        for code in atc_codes:
            for crit in self._prefix_lookup(self.by_atc, code):
                seen.setdefault(crit.id, crit)
        for code in icd_codes:
            for crit in self._prefix_lookup(self.by_icd, code):
                seen.setdefault(crit.id, crit)
        order = {c.id: i for i, c in enumerate(self.stopp_start.criterion)}
        return sorted(seen.values(), key=lambda c: order[c.id])

    def versions(self) -> dict[str, str]:
        return {
            "stopp_start": self.stopp_start.version,
            "acb": self.acb.version,
            "renal": self.renal.version,
            "redundancy": self.redundancy.version,
            "adherence": self.adherence.version,
        }


def merge_criteria(*files: StoppStartFile) -> StoppStartFile:
    """One rule set from several criteria files (``stopp_start.toml``, ``start.toml``, then
    ``start_found.toml``):
    the lists are concatenated, not deduplicated, so an id in two files stays a load error;
    the version names every file's, so a stored analysis says which encodings it used."""
    return msgspec.structs.replace(
        files[0],
        version="+".join(f.version for f in files),
        criterion=tuple(c for f in files for c in f.criterion),
        not_encoded=tuple(n for f in files for n in f.not_encoded),
    )


@cache
def load() -> RuleSet:
    """The bundled rules, validated and compiled once per process."""
    return RuleSet(
        merge_criteria(
            _decode("stopp_start.toml", StoppStartFile),
            _decode("start.toml", StoppStartFile),
            _decode("start_found.toml", StoppStartFile),
        ),
        _decode("acb.toml", AcbFile),
        _decode("renal.toml", RenalFile),
        _decode("redundancy.toml", RedundancyFile),
        _decode("adherence.toml", AdherenceFile),
    )


# ------------------------------------------------------------------ the docs' status table
TOTALS = {"STOPP": 133, "START": 57}
"""Criteria in v3 (O'Mahony et al. 2023: 190 criteria)."""
TABLE_BEGIN = "<!-- status-table:begin (generated by services.analysis.rules.status_markdown) -->"
TABLE_END = "<!-- status-table:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _lab_text(test: LabTest) -> str:
    text = f"{test.code} {test.op} {test.value:g}"
    if test.if_conditions:
        text += " with ICD-10 " + "/".join(test.if_conditions)
    return text


def _evaluated_from(crit: Criterion) -> str:
    parts: list[str] = []
    if crit.drugs:
        parts.append("ATC " + ", ".join(crit.drugs))
    if crit.except_drugs:
        parts.append("except ATC " + ", ".join(crit.except_drugs))
    parts.extend("with ATC " + "/".join(group) for group in crit.also_drugs)
    if crit.without_drugs:
        parts.append("without ATC " + ", ".join(crit.without_drugs))
    if crit.conditions:
        parts.append("ICD-10 " + ", ".join(crit.conditions))
    parts.extend("with ICD-10 " + "/".join(group) for group in crit.also_conditions)
    if crit.without_conditions:
        parts.append("not ICD-10 " + ", ".join(crit.without_conditions))
    if crit.sex:
        parts.append(f"sex {crit.sex}")
    for test in crit.labs:
        parts.append(_lab_text(test))
    if crit.labs_any:
        arm = " or ".join(_lab_text(t) for t in crit.labs_any)
        if crit.or_conditions:
            arm += " or ICD-10 " + ", ".join(crit.or_conditions)
        if crit.or_drugs:
            arm += " or with ATC " + ", ".join(crit.or_drugs)
        parts.append(arm)
    if crit.max_age is not None:
        parts.append(f"age ≤ {crit.max_age}")
    if crit.min_days:
        parts.append(f"≥ {crit.min_days} days")
    if crit.min_daily_mg is not None:
        parts.append(f"≥ {crit.min_daily_mg:g} mg/day")
    if crit.start_atc:
        parts.append("therapy absent: " + ", ".join(crit.start_atc))
    return "; ".join(parts)


def status_markdown(rules: RuleSet) -> str:
    """The status of every STOPP/START v3 criterion, from the data (docs/stopp-start-v3.md
    embeds it; a test keeps the two equal)."""
    rows: list[tuple[str, str, str, str, str, str, str]] = []
    for crit in rules.stopp_start.criterion:
        notes = "; ".join(x for x in (crit.partial_reason, crit.doubt) if x)
        rows.append(
            (
                crit.id,
                crit.kind.upper(),
                crit.status,
                f"{crit.text or crit.summary} — *{crit.label_fr}*",
                "published" if crit.text else "summary",
                _evaluated_from(crit),
                notes,
            )
        )
    redundancy_doubts = sorted({g.doubt for g in rules.redundancy.group if g.doubt})
    rows.append(
        (
            rules.redundancy.rule,
            "STOPP",
            "encoded",
            "Any duplicate drug class prescription for daily regular use (as distinct from PRN "
            "use), e.g. two concurrent NSAIDs, SSRIs, loop diuretics, ACE inhibitors, "
            "anticoagulants, antipsychotics, opioid analgesics — *Doublon de classe "
            "médicamenteuse*",
            "published",
            f"ATC classes of `redundancy.toml` ({len(rules.redundancy.group)} groups, "
            "then same substance and same level-4 class)",
            "; ".join(
                [
                    "regular versus PRN use is not in the record; two different opioids "
                    "are not flagged (long- plus short-acting is usual practice)",
                    *redundancy_doubts,
                ]
            ),
        )
    )
    rows.append(
        (
            rules.acb.stopp_rule,
            "STOPP",
            "encoded",
            "Concomitant use of two or more drugs with antimuscarinic/anticholinergic "
            f"properties (ACB score ≥ {rules.acb.threshold}, or two drugs of score ≥ 2) — "
            "*Charge anticholinergique élevée*",
            "summary",
            "ATC + ACB scale (`acb.toml`)",
            rules.acb.stopp_doubt,
        )
    )
    for item in rules.stopp_start.not_encoded:
        rows.append(
            (
                item.id,
                item.id.split(" ", 1)[0],
                "not evaluable",
                f"{item.text or item.summary} — *{item.label_fr}*",
                "published" if item.text else "summary",
                "—",
                "; ".join(x for x in (item.reason, item.doubt) if x),
            )
        )
    rows.sort(key=lambda r: (r[1] != "STOPP", r[0].rsplit(" ", 1)[-1][0], _number(r[0])))
    lines = [
        TABLE_BEGIN,
        "",
        "| | in v3 | encoded | partially encoded | not evaluable | not yet encoded |",
        "|---|---|---|---|---|---|",
    ]
    for kind, total in TOTALS.items():
        mine = [r for r in rows if r[1] == kind]
        counts = [
            sum(1 for r in mine if r[2] == s) for s in ("encoded", "partial", "not evaluable")
        ]
        lines.append(
            f"| {kind} | {total} | {counts[0]} | {counts[1]} | {counts[2]} | {total - len(mine)} |"
        )
    lines += [
        "",
        "| id | kind | status | criterion — *French label* | wording | evaluated from "
        "| not checked / doubt |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    lines += ["", TABLE_END]
    return "\n".join(lines)


def _number(rule_id: str) -> int:
    tail = rule_id.rsplit(" ", 1)[-1][1:]
    return int(tail) if tail.isdigit() else 0
