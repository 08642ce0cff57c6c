"""The clinical engine: pure functions from a :class:`PatientRecord` to findings.

No I/O here: the thesaurus and the rules are passed in, already loaded. Everything is
sorted on the way in and on the way out, so the order of the bundle's entries never
changes the answer.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import msgspec

from services.analysis.models import (
    AnalysisResult,
    AnalysisReview,
    BpmEligibility,
    Decision,
    Dispense,
    Drug,
    Finding,
    FindingDecision,
    Lab,
    NotEvaluated,
    PatientRecord,
    Severity,
)
from services.analysis.rules import Criterion, LabTest, RedundancyFile, RuleSet
from services.analysis.rules import load as load_rules
from services.medications import Thesaurus
from services.patients import SubstancePeriod, rule_in_force
from services.patients import bpm_eligibility as patient_bpm_eligibility

LEVELS: dict[str, Severity] = {
    "contre-indication": "contraindication",
    "association-deconseillee": "avoid",
    "precaution-emploi": "precaution",
    "a-prendre-en-compte": "consider",
}
SEVERITY_RANK: dict[str, int] = {
    "contraindication": 0,
    "avoid": 1,
    "high": 2,
    "precaution": 3,
    "moderate": 4,
    "consider": 5,
    "low": 6,
}
KIND_RANK = {"interaction": 0, "dose": 1, "stopp": 2, "redundancy": 3, "start": 4, "adherence": 5}
CREATININE_UMOL_PER_MG_DL = 88.42
EGFR_CODES = ("98979-8", "33914-3")


# ------------------------------------------------------------------ renal function (pure)
def cockcroft_gault(
    *, age: float, weight_kg: float, creatinine_mg_dl: float, female: bool
) -> float:
    """Creatinine clearance in mL/min (Cockcroft & Gault, Nephron 1976)."""
    if age <= 0 or weight_kg <= 0 or creatinine_mg_dl <= 0:
        raise ValueError("age, weight and creatinine must be positive")
    value = (140 - age) * weight_kg / (72 * creatinine_mg_dl)
    return max(0.0, value * (0.85 if female else 1.0))


def ckd_epi_2021(*, age: float, creatinine_mg_dl: float, female: bool) -> float:
    """eGFR in mL/min/1.73 m² by the race-free CKD-EPI 2021 equation (Inker, NEJM 2021)."""
    if age <= 0 or creatinine_mg_dl <= 0:
        raise ValueError("age and creatinine must be positive")
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine_mg_dl / kappa
    value = 142 * min(ratio, 1) ** alpha * max(ratio, 1) ** -1.200 * 0.9938**age
    return float(value * (1.012 if female else 1.0))


def creatinine_mg_dl(lab: Lab) -> float:
    return lab.value / CREATININE_UMOL_PER_MG_DL if lab.loinc == "14682-9" else lab.value


class Renal:
    """Kidney function estimates available for one record, and what each one used."""

    def __init__(self, record: PatientRecord, age: float | None, labs: Mapping[str, Lab]) -> None:
        self.cg: float | None = None
        self.egfr: float | None = None
        self.egfr_method = ""
        self.evidence: dict[str, Any] = {}
        creat = labs.get("2160-0") or labs.get("14682-9")
        if "2160-0" in labs and "14682-9" in labs:
            creat = max(labs["2160-0"], labs["14682-9"], key=lambda lab: lab.when or date.min)
        weight = labs.get("29463-7")
        female = record.sex == "female"
        if creat is not None:
            self.evidence["creatinine"] = _lab_evidence(creat)
        if creat is not None and weight is not None and age is not None and record.sex:
            self.cg = round(
                cockcroft_gault(
                    age=age,
                    weight_kg=weight.value,
                    creatinine_mg_dl=creatinine_mg_dl(creat),
                    female=female,
                ),
                1,
            )
            self.evidence["weight"] = _lab_evidence(weight)
        measured = [labs[c] for c in EGFR_CODES if c in labs]
        if measured:
            latest = max(measured, key=lambda lab: lab.when or date.min)
            self.egfr = latest.value
            self.egfr_method = f"DFG du dossier (LOINC {latest.loinc})"
            self.evidence["egfr"] = _lab_evidence(latest)
        elif creat is not None and age is not None and record.sex:
            self.egfr = round(
                ckd_epi_2021(age=age, creatinine_mg_dl=creatinine_mg_dl(creat), female=female), 1
            )
            self.egfr_method = "DFG calculé (CKD-EPI 2021)"

    def value(self, prefer: str = "cockcroft-gault") -> tuple[float, str, bool] | None:
        """(mL/min, method, preferred?) or None when nothing can be estimated."""
        cg = (self.cg, "clairance de Cockcroft-Gault") if self.cg is not None else None
        gfr = (self.egfr, self.egfr_method) if self.egfr is not None else None
        first, second = (cg, gfr) if prefer == "cockcroft-gault" else (gfr, cg)
        if first is not None:
            return float(first[0]), first[1], True
        if second is not None:
            return float(second[0]), second[1], False
        return None


def _lab_evidence(lab: Lab) -> dict[str, Any]:
    return {
        "loinc": lab.loinc,
        "value": lab.value,
        "unit": lab.unit,
        "date": lab.when.isoformat() if lab.when else None,
    }


def _drug_evidence(drug: Drug) -> dict[str, Any]:
    found: dict[str, Any] = {"label": drug.label, "atc": drug.atc}
    if drug.atc_source:
        found["atc_source"] = drug.atc_source
    if drug.cis:
        found["cis"] = drug.cis
    if drug.start:
        found["start"] = drug.start.isoformat()
    if drug.daily_dose_mg is not None:
        found["daily_dose_mg"] = drug.daily_dose_mg
    return found


def age_on(birth: date, when: date) -> int:
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


def _starts(code: str | None, prefixes: Iterable[str]) -> bool:
    if code is None:
        return False
    return code.startswith(prefixes if isinstance(prefixes, tuple) else tuple(prefixes))


def _conf(value: float) -> float:
    return round(min(1.0, max(0.05, value)), 2)


# ------------------------------------------------------------------ interactions
_KEYS_CACHE: dict[tuple[str | None, str | None], set[str]] = {}
_PAIRS_CACHE: dict[tuple[Any, ...], list[tuple[Any, str, str]]] = {}
_ITEM_CACHE: dict[int, tuple[Any, ...]] = {}
_CACHE_OWNER: list[Thesaurus] = []


def _own_caches(thesaurus: Thesaurus) -> None:
    """The memo caches below belong to one thesaurus object (held, so never confused)."""
    if not _CACHE_OWNER or _CACHE_OWNER[0] is not thesaurus:
        _KEYS_CACHE.clear()
        _PAIRS_CACHE.clear()
        _ITEM_CACHE.clear()
        _CACHE_OWNER[:] = [thesaurus]


def _thesaurus_keys(thesaurus: Thesaurus, atc: str | None, name: str | None) -> set[str]:
    """Thesaurus entities (substances and their classes) of a drug, cached per edition."""
    _own_caches(thesaurus)
    marker = (atc, name)
    found = _KEYS_CACHE.get(marker)
    if found is None:
        keys: set[str] = set()
        if atc:
            keys |= thesaurus.keys_for_atc(atc)
        if name:
            keys |= thesaurus.keys_for_name(name)
        if len(_KEYS_CACHE) > 50_000:
            _KEYS_CACHE.clear()
        found = _KEYS_CACHE[marker] = keys
    return found


def _between(
    thesaurus: Thesaurus, first: Drug, left: set[str], second: Drug, right: set[str]
) -> list[tuple[Any, str, str]]:
    """``thesaurus.between`` memoised per pair of (ATC, name): the same pairs recur."""
    _own_caches(thesaurus)
    marker = (first.atc, first.name, second.atc, second.name)
    found = _PAIRS_CACHE.get(marker)
    if found is None:
        if len(_PAIRS_CACHE) > 200_000:
            _PAIRS_CACHE.clear()
        found = _PAIRS_CACHE[marker] = thesaurus.between(left, right)
    return found


def find_interactions(drugs: Sequence[Drug], thesaurus: Thesaurus) -> list[Finding]:
    """Every pair of active drugs checked against the thesaurus, classes expanded."""
    keyed: list[tuple[Drug, set[str]]] = []
    for drug in drugs:
        keys = _thesaurus_keys(thesaurus, drug.atc, drug.name)
        if keys:
            keyed.append((drug, keys))
    findings: list[Finding] = []
    seen: set[tuple[str, ...]] = set()
    for i, (first, left) in enumerate(keyed):
        for second, right in keyed[i + 1 :]:
            if first.atc is not None and first.atc == second.atc:
                continue  # one substance twice is a redundancy, not an interaction
            for item, key_a, key_b in _between(thesaurus, first, left, second, right):
                marker = (item.a, item.b, *sorted((first.label, second.label)))
                if marker in seen:
                    continue
                seen.add(marker)
                findings.append(_interaction(item, first, second, key_a, key_b, thesaurus))
    return findings


_INTERACTION_ADVICE: dict[str, str] = {
    "contraindication": "Association contre-indiquée : ne pas délivrer en l'état, "
    "contacter le prescripteur.",
    "avoid": "Association déconseillée : contacter le prescripteur avant délivrance.",
    "precaution": "Précaution d'emploi : délivrer en expliquant la surveillance prévue "
    "par le thésaurus.",
    "consider": "À prendre en compte : informer le patient, pas d'action requise en général.",
}
_NUMBER = r"(\d+(?:[.,]\d+)?) ?(mg|g)"
_RANGE_PER_DAY = re.compile(r"de (\d+(?:[.,]\d+)?) ?mg à (\d+(?:[.,]\d+)?) ?mg par jour")
_DOSE_OR_DAY = re.compile(
    rf"(?:>=|≥) ?{_NUMBER} par\s+prise\s+et/ou\s+(>=|≥|<) ?{_NUMBER} par jour"
)


def _mg(value: str, unit: str) -> float:
    return float(value.replace(",", ".")) * (1000.0 if unit == "g" else 1.0)


def _condition_holds(text: str, drug: Drug) -> bool | None:
    """Whether one thesaurus dose condition holds for ``drug``; None when it cannot be said.

    Three forms are read, those of the aspirin dose classes: a daily range (« de 50 mg à
    375 mg par jour »), two lower bounds (« >=1g par prise et/ou >=3g par jour »: either
    suffices) and a lower bound per dose with an upper bound per day (« >=500 mg par prise
    et/ou <3g par jour »: the analgesic class, both needed). A condition that also names a
    context (« antécédent d'ulcère ») is None when its dose part holds: the context is not
    read. Any other wording is None.
    """
    flat = " ".join(text.split())
    holds: bool | None = None
    if found := _RANGE_PER_DAY.search(flat):
        if drug.daily_dose_mg is None:
            return None
        holds = _mg(found[1], "mg") <= drug.daily_dose_mg <= _mg(found[2], "mg")
    elif found := _DOSE_OR_DAY.search(flat):
        if drug.dose_mg is None or drug.daily_dose_mg is None:
            return None
        per_dose, per_day = _mg(found[1], found[2]), _mg(found[4], found[5])
        if found[3] == "<":
            holds = drug.dose_mg >= per_dose and drug.daily_dose_mg < per_day
        else:
            holds = drug.dose_mg >= per_dose or drug.daily_dose_mg >= per_day
    if holds and "antécédent" in flat:
        return None
    return holds


def _dose_level(
    item: Any, first: Drug, second: Drug, key_a: str, key_b: str, thesaurus: Thesaurus
) -> tuple[Any, str, Drug] | None:
    """The level whose dose condition the known dose meets, when it can be said for sure.

    The dose is the one of the drug on the substance side of the pair (e.g. aspirin in
    « acide acétylsalicylique + anticoagulants oraux »). None (the caller then reports
    every level at the most severe one) unless every condition of every level is read and
    exactly one level is met.
    """
    sides = [
        drug
        for drug, key in ((first, key_a), (second, key_b))
        if key in thesaurus.entities and thesaurus.entities[key].kind == "substance"
    ]
    if len(sides) != 1:
        return None
    drug = sides[0]
    met = []
    for level in item.levels:
        parts = [p for p in re.split(r"(?:^|\n)- ", level.condition) if p.strip()]
        held = [_condition_holds(p, drug) for p in parts]
        if not held or any(h is None for h in held):
            return None
        if any(held):
            met.append(level)
    if len(met) != 1:
        return None
    return met[0].level, " ".join(met[0].condition.split()), drug


def _interaction(
    item: Any, first: Drug, second: Drug, key_a: str, key_b: str, thesaurus: Thesaurus
) -> Finding:
    _own_caches(thesaurus)
    fixed = _ITEM_CACHE.get(id(item))
    if fixed is None:
        # what depends on the thesaurus entry alone, not on the patient: computed once
        fixed = _ITEM_CACHE[id(item)] = (
            LEVELS.get(str(item.level.value), "consider"),
            [lv for lv in item.levels if lv.condition],
            [
                thesaurus.entities[k].name if k in thesaurus.entities else k
                for k in (item.a, item.b)
            ],
            sorted({s.page for s in item.sources}),
            sorted({f"{s.entry} + {s.partner}" for s in item.sources}),
        )
    severity, conditional, names, pages, entries = fixed
    message = item.message
    confidence = 0.95
    evidence: dict[str, Any] = {
        "drugs": [_drug_evidence(first), _drug_evidence(second)],
        "via": [key_a, key_b],
        "thesaurus": {"edition": thesaurus.edition, "pages": list(pages), "entries": list(entries)},
    }
    evaluated = _dose_level(item, first, second, key_a, key_b, thesaurus) if conditional else None
    if evaluated is not None:
        level, condition, drug = evaluated
        severity = LEVELS.get(str(level.value), "consider")
        evidence["conditions"] = [
            {"level": LEVELS.get(str(lv.level.value), "consider"), "condition": lv.condition}
            for lv in item.levels
        ]
        evidence["condition_evaluated"] = True
        evidence["condition_met"] = {
            "level": severity,
            "condition": condition,
            "drug": drug.label,
            "dose_mg": drug.dose_mg,
            "daily_dose_mg": drug.daily_dose_mg,
        }
        message += f" Niveau retenu pour la posologie connue ({severity}) : {condition}."
        confidence = 0.9
    elif conditional:
        doses_known = first.daily_dose_mg is not None and second.daily_dose_mg is not None
        evidence["conditions"] = [
            {"level": LEVELS.get(str(lv.level.value), "consider"), "condition": lv.condition}
            for lv in item.levels
        ]
        evidence["condition_evaluated"] = False
        message += " Niveau selon la dose ou le contexte : " + " ; ".join(
            f"{LEVELS.get(str(lv.level.value))} {lv.condition}".strip() for lv in item.levels
        )
        message += "."
        confidence = 0.75 if doses_known else 0.6
    recommendation = _INTERACTION_ADVICE[severity]
    if item.conduct:
        recommendation += " Conduite à tenir (ANSM) : " + item.conduct
    return Finding(
        kind="interaction",
        rule=f"ANSM {thesaurus.edition}: {names[0]} + {names[1]}",
        severity=severity,
        atc=sorted({d.atc for d in (first, second) if d.atc}),
        message=message,
        recommendation=recommendation,
        recommendation_gp=f"Interaction {names[0]} + {names[1]} ({severity}, thésaurus ANSM "
        f"{thesaurus.edition}) entre {first.label} et {second.label}.",
        confidence=confidence,
        evidence=evidence,
    )


def speciality_interactions(
    drugs: Sequence[Drug], lookup: Callable[[list[str]], list[Any]]
) -> tuple[list[Finding], list[NotEvaluated]]:
    """Interactions of the drugs that have a CIS but no ATC code, through the catalog.

    ``lookup`` is ``services.medications.interactions_for_specialities`` bound to a store
    (matching by BDPM substance codes, which a third of the catalog needs); only pairs with
    at least one drug without ATC are kept (the others are found by ATC already).
    """
    uncoded = {d.cis for d in drugs if d.cis and not d.atc}
    if not uncoded:
        return [], []
    known: list[str] = []
    unknown: list[str] = []
    for cis in sorted({d.cis for d in drugs if d.cis}):
        try:
            lookup([cis])
        except KeyError:
            unknown.append(cis)
        else:
            known.append(cis)
    by_cis = {d.cis: d for d in drugs if d.cis}
    findings: list[Finding] = []
    for view in lookup(known) if len(known) >= 2 else []:
        pair = [via.split(" ", 1)[0] for via in view.via]
        if not set(pair) & uncoded:
            continue
        severity = LEVELS.get(view.level, "consider")
        involved = [by_cis[c] for c in pair if c in by_cis]
        findings.append(
            Finding(
                kind="interaction",
                rule=f"ANSM {view.edition}: {view.a.upper()} + {view.b.upper()}",
                severity=severity,
                atc=sorted({d.atc for d in involved if d.atc}),
                message=view.message,
                recommendation=_INTERACTION_ADVICE[severity],
                recommendation_gp=f"Interaction {view.a} + {view.b} ({severity}, thésaurus "
                f"ANSM {view.edition}).",
                confidence=0.85 if not any(lv["condition"] for lv in view.levels) else 0.6,
                evidence={
                    "drugs": [_drug_evidence(d) for d in involved],
                    "via": view.via,
                    "matched_by": "BDPM substance codes of the CIS",
                    "levels": view.levels,
                    "thesaurus": {"edition": view.edition, "sources": view.sources},
                },
            )
        )
    missing = [
        NotEvaluated(rule="interactions (CIS)", missing=[f"CIS {cis} absent du catalogue"])
        for cis in unknown
        if cis in uncoded
    ]
    return findings, missing


# ------------------------------------------------------------------ redundancy
def _separated(a: str, b: str, exceptions: RedundancyFile) -> bool:
    for exc in exceptions.exception:
        index_a = [i for i, s in enumerate(exc.sets) if _starts(a, s)]
        index_b = [i for i, s in enumerate(exc.sets) if _starts(b, s)]
        if index_a and index_b and not set(index_a) & set(index_b):
            return True
    return False


def _conflicts(codes: Sequence[str], data: RedundancyFile) -> set[str]:
    involved: set[str] = set()
    for i, a in enumerate(codes):
        for b in codes[i + 1 :]:
            if a != b and not _separated(a, b, data):
                involved |= {a, b}
    return involved


def find_redundancies(drugs: Sequence[Drug], rules: RuleSet | None = None) -> list[Finding]:
    """Therapeutic redundancies among active drugs (public: the prescriptions service uses it).

    Same substance through several products; two drugs of a class listed in
    ``data/redundancy.toml`` (with its exceptions, e.g. a reliever plus a long-acting
    bronchodilator); other pairs of the same ATC level-4 class, as a low-severity check.
    """
    data = (rules or load_rules()).redundancy
    coded = sorted((d for d in drugs if d.atc), key=lambda d: (d.atc or "", d.label))
    findings: list[Finding] = []
    by_substance: dict[str, list[Drug]] = defaultdict(list)
    for drug in coded:
        if drug.atc and len(drug.atc) == 7:
            by_substance[drug.atc].append(drug)
    for atc, same in sorted(by_substance.items()):
        if len(same) < 2:
            continue
        usual = _starts(atc, data.same_substance_lower_severity)
        findings.append(
            Finding(
                kind="redundancy",
                rule=f"{data.rule} (même substance)",
                severity="low" if usual else "high",
                atc=[atc],
                message=f"La même substance ({atc}) est présente dans {len(same)} produits : "
                + ", ".join(d.label for d in same)
                + ".",
                recommendation="Vérifier qu'il ne s'agit pas d'un doublon (princeps et "
                "générique, ancienne et nouvelle ordonnance)"
                + (
                    " ; une forme LP avec une forme LI pour les accès est un schéma usuel."
                    if usual
                    else "."
                ),
                recommendation_gp=f"Double prescription de {atc} : doublon à confirmer.",
                confidence=0.9,
                evidence={"drugs": [_drug_evidence(d) for d in same], "source": data.source},
            )
        )
    grouped: set[str] = set()
    for group in data.group:
        members = [d for d in coded if _starts(d.atc, group.prefixes)]
        codes = sorted({d.atc for d in members if d.atc})
        grouped |= set(codes)
        involved = _conflicts(codes, data)
        if not involved:
            continue
        findings.append(
            Finding(
                kind="redundancy",
                rule=f"{group.rule} ({group.name})",
                severity=group.severity,
                atc=sorted(involved),
                message=group.message,
                recommendation=group.recommendation,
                recommendation_gp=f"Redondance ({group.name}) : "
                + ", ".join(d.label for d in members if d.atc in involved)
                + ".",
                confidence=0.85 if group.doubt else 0.9,
                evidence={
                    "drugs": [_drug_evidence(d) for d in members if d.atc in involved],
                    "source": group.source,
                    **({"doubt": group.doubt} if group.doubt else {}),
                },
            )
        )
    by_class: dict[str, list[Drug]] = defaultdict(list)
    for drug in coded:
        if (
            drug.atc
            and len(drug.atc) >= 5
            and drug.atc not in grouped
            and not _starts(drug.atc, data.level4_excluded)
        ):
            by_class[drug.atc[:5]].append(drug)
    for prefix, members in sorted(by_class.items()):
        involved = _conflicts(sorted({d.atc for d in members if d.atc}), data)
        if not involved:
            continue
        findings.append(
            Finding(
                kind="redundancy",
                rule=f"{data.rule} (classe ATC {prefix})",
                severity="low",
                atc=sorted(involved),
                message=f"Deux médicaments de la même classe ATC ({prefix}) : "
                + ", ".join(d.label for d in members if d.atc in involved)
                + ".",
                recommendation="Vérifier que l'association est voulue.",
                recommendation_gp=f"Deux médicaments de la classe {prefix} associés.",
                confidence=0.6,
                evidence={
                    "drugs": [_drug_evidence(d) for d in members if d.atc in involved],
                    "source": data.source,
                },
            )
        )
    return findings


# ------------------------------------------------------------------ renal dosing
def find_dose_issues(
    drugs: Sequence[Drug], renal: Renal, rules: RuleSet
) -> tuple[list[Finding], list[NotEvaluated]]:
    findings: list[Finding] = []
    missing: list[NotEvaluated] = []
    for drug in drugs:
        entry = rules.renal_by_atc.get(drug.atc or "")
        if entry is None:
            continue
        estimate = renal.value(entry.estimate)
        rule = f"RCP 4.2 {entry.name}"
        if estimate is None:
            missing.append(
                NotEvaluated(
                    rule=rule,
                    missing=[
                        "créatinine (LOINC 2160-0 ou 14682-9) avec poids, âge et sexe, "
                        "ou DFG (LOINC 98979-8 / 33914-3)"
                    ],
                )
            )
            continue
        value, method, preferred = estimate
        bands = [b for b in entry.bands if b.at_least <= value < b.below]
        if not bands:
            continue
        band = min(bands, key=lambda b: b.below)
        dose = drug.daily_dose_mg
        if band.max_daily_mg is not None and dose is not None and dose <= band.max_daily_mg + 1e-9:
            continue
        severity: Severity = {
            "contraindicated": "contraindication",
            "avoid": "avoid",
            "reduce": "high" if dose is not None and band.max_daily_mg is not None else "moderate",
            "monitor": "low",
        }[band.action]
        confidence = 0.9 - (0.0 if preferred else 0.15) - (0.1 if entry.doubt else 0.0)
        if band.action == "reduce" and dose is None:
            confidence -= 0.15
        if band.action in ("contraindicated", "avoid"):
            text = f"{entry.name} : fonction rénale {value:.0f} mL/min ({method}). {band.advice}"
            advice = f"Contacter le prescripteur : {band.advice}"
        else:
            text = f"{entry.name} : fonction rénale {value:.0f} mL/min ({method}). {band.advice}"
            advice = f"Réduire à la posologie de l'RCP : {band.advice}" + (
                f" Posologie actuelle : {dose:g} mg/j."
                if dose is not None
                else " Posologie non connue : la vérifier."
            )
        evidence: dict[str, Any] = {
            "drugs": [_drug_evidence(drug)],
            "renal": {"value": value, "method": method, **renal.evidence},
            "source": entry.source,
            "band": {"below": band.below, "at_least": band.at_least, "action": band.action},
        }
        if band.max_daily_mg is not None:
            evidence["band"]["max_daily_mg"] = band.max_daily_mg
        if entry.doubt:
            evidence["doubt"] = entry.doubt
        findings.append(
            Finding(
                kind="dose",
                rule=rule,
                severity=severity,
                atc=[drug.atc] if drug.atc else [],
                message=text,
                recommendation=advice,
                recommendation_gp=f"{entry.name}, fonction rénale {value:.0f} mL/min "
                f"({method}) : {band.advice} ({entry.source}).",
                confidence=_conf(confidence),
                evidence=evidence,
            )
        )
    return findings, missing


# ------------------------------------------------------------------ anticholinergic burden
def find_anticholinergic_burden(drugs: Sequence[Drug], rules: RuleSet) -> list[Finding]:
    scored: dict[str, tuple[int, Drug]] = {}
    for drug in drugs:
        item = rules.acb_scores.get(drug.atc or "")
        if item is not None:
            scored.setdefault(item.name, (item.score, drug))
    total = sum(score for score, _ in scored.values())
    definite = [name for name, (score, _) in scored.items() if score >= 2]
    if total < rules.acb.threshold and len(definite) < 2:
        return []
    severity: Severity = "high" if total >= rules.acb.threshold and len(scored) >= 2 else "moderate"
    names = sorted(scored)
    return [
        Finding(
            kind="stopp",
            rule=rules.acb.stopp_rule,
            severity=severity,
            atc=sorted({d.atc for _, d in scored.values() if d.atc}),
            message=f"Charge anticholinergique élevée : score ACB {total} "
            f"({', '.join(f'{n} {scored[n][0]}' for n in names)}). Risque de confusion, "
            "chutes, constipation et rétention urinaire.",
            recommendation="Proposer au prescripteur de réduire la charge anticholinergique, "
            "en commençant par les médicaments de score 3.",
            recommendation_gp=f"Score ACB {total} (seuil {rules.acb.threshold}) : "
            "déprescription des anticholinergiques à envisager (STOPP v3).",
            confidence=0.85,
            evidence={
                "drugs": [_drug_evidence(scored[n][1]) for n in names],
                "acb_total": total,
                "scores": {n: scored[n][0] for n in names},
                "scale": rules.acb.source,
                "doubt": rules.acb.stopp_doubt,
            },
        )
    ]


# ------------------------------------------------------------------ adherence (PDC)
def _key(item: Drug | Dispense) -> str:
    return item.atc or (f"CIS {item.cis}" if item.cis else "") or item.label


def proportion_of_days_covered(
    dispenses: Sequence[Dispense], *, start: date, end: date, presorted: bool = False
) -> tuple[float, list[tuple[date, date]]]:
    """PDC over [start, end) and the uncovered gaps; early refills carry over (PQA).

    ``presorted``: the caller already ordered ``dispenses`` by date (saves a sort per drug
    on the hot path of every analysis).
    """
    days = (end - start).days
    if days <= 0:
        raise ValueError("empty period")
    # day numbers (ordinals) rather than dates: integer arithmetic, no timedelta per step
    first, last = start.toordinal(), end.toordinal()
    covered = 0
    spans: list[tuple[int, int]] = []
    cursor = supply_end = first
    ordered = dispenses if presorted else sorted(dispenses, key=lambda d: d.handed_over)
    for item in ordered:
        handed = item.handed_over.toordinal()
        begin = handed if handed > supply_end else supply_end
        if cursor < begin < last:
            spans.append((cursor, begin))
        finish = begin + item.days_supply
        lo = begin if begin > first else first
        hi = finish if finish < last else last
        if hi > lo:
            covered += hi - lo
        if finish > supply_end:
            supply_end = finish
        if supply_end > cursor:
            cursor = supply_end
    if cursor < last:
        spans.append((cursor, last))
    gaps = [(date.fromordinal(a), date.fromordinal(b)) for a, b in spans]
    return min(1.0, covered / days), gaps


def find_adherence(record: PatientRecord, rules: RuleSet) -> list[Finding]:
    cfg = rules.adherence
    window_start = record.as_of - timedelta(days=cfg.window_days)
    wanted = {_key(d) for d in record.drugs}
    groups: dict[str, list[Dispense]] = defaultdict(list)
    for item in record.dispenses:
        if item.handed_over >= window_start:
            key = _key(item)
            if not wanted or key in wanted:
                groups[key].append(item)
    findings: list[Finding] = []
    for _group, unordered in sorted(groups.items()):
        if len(unordered) < cfg.min_dispenses:
            continue
        items = sorted(unordered, key=lambda d: (d.handed_over, d.days_supply, d.label))
        first = items[0].handed_over
        if (record.as_of - first).days < 60:
            continue
        pdc, gaps = proportion_of_days_covered(items, start=first, end=record.as_of, presorted=True)
        if pdc >= cfg.threshold:
            continue
        big = [(a, b) for a, b in gaps if (b - a).days >= cfg.min_gap_days]
        label = items[-1].label
        findings.append(
            Finding(
                kind="adherence",
                rule=f"PDC < {cfg.threshold:.0%} sur {cfg.window_days} jours",
                severity="high" if pdc < cfg.high_below else "moderate",
                atc=sorted({d.atc for d in items if d.atc}),
                message=f"{label} : proportion de jours couverts {pdc:.0%} depuis le "
                f"{first.isoformat()} ({len(big)} interruption(s) d'au moins "
                f"{cfg.min_gap_days} jours).",
                recommendation="Aborder l'observance avec le patient (oublis, effets "
                "indésirables, difficultés de prise) ; proposer un pilulier ou un entretien.",
                recommendation_gp=f"Observance de {label} estimée à {pdc:.0%} (PDC "
                "sur l'historique de délivrance).",
                confidence=_conf(0.8 if len(items) >= 3 else 0.65),
                evidence={
                    "pdc": round(pdc, 3),
                    "period": {"start": first.isoformat(), "end": record.as_of.isoformat()},
                    "dispenses": [
                        {"date": d.handed_over.isoformat(), "days_supply": d.days_supply}
                        for d in items
                    ],
                    "gaps": [
                        {"start": a.isoformat(), "end": b.isoformat(), "days": (b - a).days}
                        for a, b in big
                    ],
                    "source": cfg.source,
                },
            )
        )
    return findings


# ------------------------------------------------------------------ BPM eligibility
def bpm_eligibility(record: PatientRecord, age: int | None) -> BpmEligibility:
    """The patients service's rule (``services.patients.bpm_eligibility``), reused as is.

    Periods: an active MedicationStatement runs from its start (else its first dispensing)
    to the date of the analysis; a dispensing covers its days of supply.
    """
    if record.birth_date is None or age is None:
        return BpmEligibility(
            eligible=False, reasons=["âge inconnu (Patient.birthDate absente ou invalide)"]
        )
    first_dispensed: dict[str, date] = {}
    keys = [_key(item) for item in record.dispenses]
    for key, item in zip(keys, record.dispenses, strict=True):
        known = first_dispensed.get(key)
        if known is None or item.handed_over < known:
            first_dispensed[key] = item.handed_over
    # a dispensing inside a statement's period (same substance) adds nothing to the runs
    stated = {
        _key(d): start
        for d in record.drugs
        if (start := d.start or first_dispensed.get(_key(d))) is not None
    }
    # the rule ignores periods ended before its look-back window: not building them saves
    # most of the work on long histories (31 days a month keeps this a safe under-estimate)
    lookback = rule_in_force(record.as_of).assumptions.lookback_months
    too_old = record.as_of - timedelta(days=31 * lookback + 1)
    periods: list[SubstancePeriod] = []
    for index, (key, item) in enumerate(zip(keys, record.dispenses, strict=True)):
        ends = item.handed_over + timedelta(days=item.days_supply - 1)
        if ends < too_old:
            continue
        covered_from = stated.get(key)
        if covered_from is not None and covered_from <= item.handed_over and ends <= record.as_of:
            continue
        periods.append(
            SubstancePeriod(
                substance=key,
                name=item.label,
                start=item.handed_over,
                end=ends,
                source=f"dispensing:{index}",
            )
        )
    unknown_start = 0
    for index, drug in enumerate(record.drugs):
        start = drug.start or first_dispensed.get(_key(drug))
        if start is None:
            unknown_start += 1
            continue
        periods.append(
            SubstancePeriod(
                substance=_key(drug),
                name=drug.label,
                start=start,
                end=record.as_of,
                source=f"statement:{index}",
            )
        )
    outcome = patient_bpm_eligibility(record.birth_date, periods, record.as_of)
    reasons = [*outcome.reasons, f"rule: {outcome.rule}"]
    if unknown_start:
        reasons.append(f"{unknown_start} active medication(s) without a start date, not counted")
    if any(c.ald for c in record.conditions):
        reasons.append("long-term condition (ALD) recorded")
    return BpmEligibility(eligible=outcome.eligible, reasons=reasons)


# ------------------------------------------------------------------ STOPP / START
class _Context:
    def __init__(
        self, record: PatientRecord, age: int | None, renal: Renal, drugs: Sequence[Drug] = ()
    ) -> None:
        self.record = record
        self.age = age
        self.renal = renal
        self.icd = sorted({c.code for c in record.conditions})
        # every prefix of every ATC code taken: "is some drug in this class?" is then a set
        # look-up per listed prefix instead of a scan of the drugs
        self.atc_prefixes = {d.atc[:n] for d in drugs if d.atc for n in range(1, len(d.atc) + 1)}

    def takes_any(self, prefixes: Sequence[str]) -> bool:
        return any(p in self.atc_prefixes for p in prefixes)

    def lab(self, test: LabTest) -> tuple[float, dict[str, Any]] | None:
        if test.code == "renal":
            found = self.renal.value()
            if found is None:
                return None
            return found[0], {"renal": found[0], "method": found[1], **self.renal.evidence}
        candidates = [
            lab
            for lab in self.record.labs
            if lab.loinc == test.code
            and (lab.when is None or (self.record.as_of - lab.when).days <= test.max_age_days)
        ]
        if not candidates:
            return None
        latest = max(candidates, key=lambda lab: lab.when or date.min)
        return latest.value, _lab_evidence(latest)


def _holds(value: float, test: LabTest) -> bool:
    return {
        "<": value < test.value,
        "<=": value <= test.value,
        ">": value > test.value,
        ">=": value >= test.value,
    }[test.op]


def _applies(test: LabTest, ctx: _Context) -> bool:
    """A threshold given for some conditions only (``if_conditions``) applies to this patient."""
    return not test.if_conditions or any(c.startswith(test.if_conditions) for c in ctx.icd)


def _lab_name(test: LabTest) -> str:
    if test.code == "renal":
        return "fonction rénale (créatinine avec poids, âge et sexe, ou DFG)"
    return f"LOINC {test.code} (moins de {test.max_age_days} jours)"


def evaluate_criterion(
    crit: Criterion, drugs: Sequence[Drug], ctx: _Context
) -> Finding | NotEvaluated | None:
    record = ctx.record
    if ctx.age is None:
        return NotEvaluated(rule=crit.id, missing=["âge (Patient.birthDate)"])
    if ctx.age < crit.min_age or (crit.max_age is not None and ctx.age > crit.max_age):
        return None
    # what can only stop the criterion comes first: a criterion that cannot fire is neither
    # a finding nor "not evaluated", and these set look-ups are the cheapest checks
    if ctx.takes_any(crit.without_drugs) or ctx.takes_any(crit.start_atc):
        return None
    if any(not ctx.takes_any(group) for group in crit.also_drugs):
        return None
    if crit.conditions and not any(c.startswith(crit.conditions) for c in ctx.icd):
        return None
    if any(not any(c.startswith(group) for c in ctx.icd) for group in crit.also_conditions):
        return None
    if crit.without_conditions and any(c.startswith(crit.without_conditions) for c in ctx.icd):
        return None
    if crit.sex is not None and record.sex is not None and record.sex != crit.sex:
        return None
    confidence = 0.9 if crit.status == "encoded" else 0.7
    wanted, excluded = crit.drugs, crit.except_drugs
    matched = [
        d
        for d in drugs
        if d.atc is not None
        and d.atc.startswith(wanted)
        and not (excluded and d.atc.startswith(excluded))
    ]
    if crit.drugs and not matched:
        return None
    if crit.min_days:
        dated = [d for d in matched if d.start is not None]
        if not dated:
            return NotEvaluated(rule=crit.id, missing=["date de début (effectivePeriod.start)"])
        matched = [d for d in dated if d.start and (record.as_of - d.start).days >= crit.min_days]
        if not matched:
            return None
    if crit.min_daily_mg is not None:
        dosed = [d for d in matched if d.daily_dose_mg is not None]
        if not dosed:
            return NotEvaluated(rule=crit.id, missing=["posologie (dosage.doseAndRate, timing)"])
        matched = [d for d in dosed if (d.daily_dose_mg or 0) >= crit.min_daily_mg]
        if not matched:
            return None
    also: list[Drug] = []
    for group in crit.also_drugs:
        if not ctx.takes_any(group):
            return None
        members = [d for d in drugs if _starts(d.atc, group) and d not in matched]
        if not members:
            return None
        also.extend(members)
    if ctx.takes_any(crit.without_drugs) or ctx.takes_any(crit.start_atc):
        return None
    conditions: list[str] = []
    if crit.conditions:
        conditions = [c for c in ctx.icd if _starts(c, crit.conditions)]
        if not conditions:
            return None
    if any(_starts(c, crit.without_conditions) for c in ctx.icd):
        return None
    for group in crit.also_conditions:
        conditions.extend(c for c in ctx.icd if _starts(c, group) and c not in conditions)
    if crit.sex is not None and record.sex is None:
        return NotEvaluated(rule=crit.id, missing=["sexe (Patient.gender)"])
    labs: list[dict[str, Any]] = []
    missing: list[str] = []
    for test in crit.labs:
        if not _applies(test, ctx):
            continue
        found = ctx.lab(test)
        if found is None:
            missing.append(_lab_name(test))
            continue
        if not _holds(found[0], test):
            return None
        labs.append(found[1])
    alternative = [c for c in ctx.icd if crit.or_conditions and c.startswith(crit.or_conditions)]
    conditions.extend(alternative)
    if crit.or_drugs and ctx.takes_any(crit.or_drugs):
        partners = [d for d in drugs if _starts(d.atc, crit.or_drugs) and d not in matched]
        also.extend(p for p in partners if p not in also)
        alternative.extend(d.atc for d in partners if d.atc)
    if crit.labs_any:
        results = [(test, ctx.lab(test)) for test in crit.labs_any if _applies(test, ctx)]
        hits = [f for t, f in results if f is not None and _holds(f[0], t)]
        for test, found in results:
            if found is not None and _holds(found[0], test):
                conditions.extend(
                    c for c in ctx.icd if _starts(c, test.if_conditions) and c not in conditions
                )
        if not hits and not alternative:
            unknown = [_lab_name(t) for t, f in results if f is None]
            if not unknown:
                return None
            missing.extend(u for u in dict.fromkeys(unknown) if u not in missing)
        labs.extend(h[1] for h in hits)
    if missing:
        return NotEvaluated(rule=crit.id, missing=missing)
    if crit.doubt:
        confidence -= 0.05
    involved = sorted({d.atc for d in (*matched, *also) if d.atc})
    evidence: dict[str, Any] = {
        "criterion": crit.summary,
        "label_fr": crit.label_fr,
        "status": crit.status,
        "source": crit.source,
        "age": ctx.age,
        "drugs": [_drug_evidence(d) for d in (*matched, *also)],
    }
    if conditions:
        evidence["conditions"] = [
            {"icd10": c.code, "onset": c.onset.isoformat() if c.onset else None}
            # in code order: two condition groups (also_conditions) must not follow entry order
            for c in sorted(record.conditions, key=lambda c: (c.code, c.onset or date.min))
            if c.code in conditions
        ]
    if labs:
        evidence["labs"] = labs
    if crit.partial_reason:
        evidence["not_checked"] = crit.partial_reason
    if crit.doubt:
        evidence["doubt"] = crit.doubt
    return Finding(
        kind=crit.kind,
        rule=crit.id,
        severity=crit.severity,
        atc=list(crit.start_atc) if crit.kind == "start" else involved,
        message=crit.message,
        recommendation=crit.recommendation,
        recommendation_gp=crit.gp,
        confidence=_conf(confidence),
        evidence=evidence,
    )


def find_stopp_start(
    drugs: Sequence[Drug], ctx: _Context, rules: RuleSet
) -> tuple[list[Finding], list[NotEvaluated]]:
    atcs = {d.atc for d in drugs if d.atc}
    findings: list[Finding] = []
    missing: list[NotEvaluated] = []
    if ctx.age is not None and ctx.age < 65:
        return findings, missing
    for crit in rules.criteria_for(atcs, set(ctx.icd)):
        if crit.kind == "stopp" and not crit.drugs and not crit.conditions:
            continue
        outcome = evaluate_criterion(crit, drugs, ctx)
        if isinstance(outcome, Finding):
            findings.append(outcome)
        elif isinstance(outcome, NotEvaluated):
            missing.append(outcome)
    if drugs and (ctx.age is None or ctx.age >= 65):
        for item in rules.stopp_start.not_encoded:
            missing.append(NotEvaluated(rule=item.id, missing=[item.reason_fr]))
    return _one_finding_per_situation(findings, rules), missing


def _one_finding_per_situation(findings: list[Finding], rules: RuleSet) -> list[Finding]:
    """Two criteria of the source that flag one situation (``same_finding_as``) give one
    finding: the one named keeps its place and cites the other in ``evidence.also``."""
    fired = {f.rule: f for f in findings}
    kept: list[Finding] = []
    for finding in findings:
        twin = rules.same_finding_as.get(finding.rule)
        if twin is not None and twin in fired:
            fired[twin].evidence.setdefault("also", []).append(
                {"rule": finding.rule, "criterion": finding.evidence.get("criterion")}
            )
            continue
        kept.append(finding)
    return kept


def _one_finding_per_renal_problem(
    dose: list[Finding], stopp: list[Finding], rules: RuleSet
) -> tuple[list[Finding], list[Finding]]:
    """A STOPP criterion on a kidney-function threshold (section E: digoxin, dabigatran,
    factor Xa inhibitors, NSAIDs, colchicine, metformin) and the renal dose rule of the same
    drug flag one problem: the pharmacist reads one finding. The dose rule's is kept (its
    SmPC threshold and "reduce to ..." are the more specific advice), cites the STOPP
    criterion in ``evidence.also`` like ``same_finding_as``, and takes the stronger of the
    two severities so that merging never lowers the alarm."""
    if not dose or not stopp:
        return dose, stopp
    renal_criteria = {
        c.id
        for c in rules.stopp_start.criterion
        if c.kind == "stopp" and any(t.code == "renal" for t in c.labs)
    }
    by_atc = {d.atc[0]: i for i, d in enumerate(dose) if len(d.atc) == 1}
    merged: dict[int, Finding] = {}
    kept_stopp: list[Finding] = []
    for finding in stopp:
        twins = [by_atc.get(code) for code in finding.atc]
        # absorbed only when every drug of the STOPP finding has its dose finding: a second
        # NSAID without a dose rule keeps the STOPP finding whole
        if finding.rule not in renal_criteria or not twins or None in twins:
            kept_stopp.append(finding)
            continue
        also = {
            "rule": finding.rule,
            "criterion": finding.evidence.get("criterion"),
            "label_fr": finding.evidence.get("label_fr"),
            "severity": finding.severity,
            "labs": finding.evidence.get("labs", []),
        }
        for twin in dict.fromkeys(t for t in twins if t is not None):
            base = merged.get(twin, dose[twin])
            evidence = {**base.evidence, "also": [*base.evidence.get("also", []), also]}
            severity = min(base.severity, finding.severity, key=lambda s: SEVERITY_RANK[s])
            merged[twin] = msgspec.structs.replace(base, evidence=evidence, severity=severity)
    return [merged.get(i, d) for i, d in enumerate(dose)], kept_stopp


# ------------------------------------------------------------------ the whole analysis
def _drug_order(d: Drug) -> tuple[Any, ...]:
    return (d.atc or "", d.label, d.cis or "", d.start or date.min, d.daily_dose_mg or 0)


def _with_catalog_atc(
    drugs: tuple[Drug, ...],
    lookup: Callable[[list[str]], Mapping[str, tuple[str, str | None]]] | None,
) -> tuple[Drug, ...]:
    """The drugs, those known only by CIS given the catalog's ATC code when it has one."""
    wanted = sorted({d.cis for d in drugs if d.cis and not d.atc})
    if lookup is None or not wanted:
        return drugs
    found = lookup(wanted)
    if not found:
        return drugs
    return tuple(
        msgspec.structs.replace(
            d,
            atc=found[d.cis][0],
            atc_source="catalog" + (f" ({found[d.cis][1]})" if found[d.cis][1] else ""),
        )
        if d.cis and not d.atc and d.cis in found
        else d
        for d in drugs
    )


def _sort_key(finding: Finding) -> tuple[Any, ...]:
    return (
        KIND_RANK[finding.kind],
        SEVERITY_RANK[finding.severity],
        finding.rule,
        finding.atc,
        finding.message,
    )


def analyze(
    record: PatientRecord,
    thesaurus: Thesaurus,
    *,
    rules: RuleSet | None = None,
    source: str | None = None,
    knowledge: Mapping[str, str | None] | None = None,
    specialities: Callable[[list[str]], list[Any]] | None = None,
    atc_for_cis: Callable[[list[str]], Mapping[str, tuple[str, str | None]]] | None = None,
) -> AnalysisResult:
    """All findings for one patient record (the engine; pure and deterministic).

    ``atc_for_cis`` (the medication catalog, bound to a store) gives the ATC code and its
    provenance of the drugs known only by CIS, so that the ATC-based rules (STOPP/START,
    redundancy, renal dosing, anticholinergic burden) see them too. Interactions keep the
    codes of the bundle: the drugs known by CIS are matched by ``specialities`` through
    their BDPM substance codes, which is more precise than their ATC class.
    """
    rules = rules or load_rules()
    coded = _with_catalog_atc(record.drugs, atc_for_cis)
    drugs = sorted(coded, key=_drug_order)
    age = age_on(record.birth_date, record.as_of) if record.birth_date else None
    latest: dict[str, Lab] = {}
    for lab in sorted(record.labs, key=lambda x: (x.when or date.min, x.value)):
        if lab.when is None or (record.as_of - lab.when).days <= 365:
            latest[lab.loinc] = lab
    renal = Renal(record, age, latest)
    ctx = _Context(record, age, renal, drugs)
    findings: list[Finding] = []
    not_evaluated: list[NotEvaluated] = [
        NotEvaluated(rule=what, missing=list(why)) for what, why in record.problems
    ]
    as_given = drugs if coded is record.drugs else sorted(record.drugs, key=_drug_order)
    findings += find_interactions(as_given, thesaurus)
    if specialities is not None:
        found, missing = speciality_interactions(as_given, specialities)
        findings += found
        not_evaluated += missing
    findings += find_redundancies(drugs, rules)
    dose, missing = find_dose_issues(drugs, renal, rules)
    not_evaluated += missing
    findings += find_anticholinergic_burden(drugs, rules)
    stopp, missing = find_stopp_start(drugs, ctx, rules)
    dose, stopp = _one_finding_per_renal_problem(dose, stopp, rules)
    findings += dose
    findings += stopp
    not_evaluated += missing
    findings += find_adherence(record, rules)
    uncoded = [d.label for d in drugs if not d.atc]
    if uncoded:
        not_evaluated.append(
            NotEvaluated(
                rule="STOPP/START, redondance, adaptation rénale",
                missing=[f"code ATC de : {label}" for label in sorted(uncoded)],
            )
        )
    unique: dict[tuple[str, ...], NotEvaluated] = {}
    for item in not_evaluated:
        unique.setdefault((item.rule, *item.missing), item)
    return AnalysisResult(
        source=source,
        as_of=record.as_of,
        knowledge={**(knowledge or {}), **rules.versions()},
        bpm_eligibility=bpm_eligibility(record, age),
        findings=sorted(findings, key=_sort_key),
        not_evaluated=sorted(unique.values(), key=lambda n: (n.rule, n.missing)),
    )


# ------------------------------------------------------------------ the pharmacist's review
TEXT_MAX = 2000
REASON_MAX = 500
PROPOSALS_MAX = 100


class ReviewError(Exception):
    """A review change that cannot be applied: an HTTP status, a problem code, and a detail
    the counter can read (French)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def decide(
    review: AnalysisReview,
    findings: Sequence[Finding],
    index: int,
    decision: Decision,
    *,
    text: str = "",
    reason: str = "",
    rule: str | None = None,
) -> AnalysisReview:
    """The review with this finding's decision set (replacing an earlier one).

    An accepted finding keeps the engine's wording for the prescriber unless a text is
    given; an edited one needs the pharmacist's text (an empty edit is a mistake, not a
    decision); a dismissed one keeps its reason. ``rule``, when given, must name the
    finding at ``index``: a stale page must not record a decision on another finding.
    """
    if not 0 <= index < len(findings):
        raise ReviewError(404, "finding-not-found", f"l'analyse n'a pas d'alerte n° {index}")
    finding = findings[index]
    if rule is not None and rule != finding.rule:
        raise ReviewError(
            409,
            "finding-mismatch",
            f"l'alerte n° {index} est la règle {finding.rule}, pas {rule}",
        )
    text, reason = text.strip()[:TEXT_MAX], reason.strip()[:REASON_MAX]
    if decision == "edited" and not text:
        raise ReviewError(400, "text-required", "une alerte modifiée doit avoir son texte")
    kept = FindingDecision(
        index=index,
        rule=finding.rule,
        decision=decision,
        text=text or (finding.recommendation_gp if decision != "dismissed" else ""),
        reason=reason,
    )
    others = tuple(d for d in review.decisions if d.index != index)
    return msgspec.structs.replace(
        review, decisions=tuple(sorted((*others, kept), key=lambda d: d.index))
    )


def propose(review: AnalysisReview, text: str) -> AnalysisReview:
    """The review with one more proposal of the pharmacist's own."""
    text = text.strip()[:TEXT_MAX]
    if not text:
        raise ReviewError(400, "empty-proposal", "la proposition est vide")
    if len(review.proposals) >= PROPOSALS_MAX:
        raise ReviewError(409, "too-many-proposals", "trop de propositions pour cette analyse")
    return msgspec.structs.replace(review, proposals=(*review.proposals, text))
