"""START v3 criteria new in v3 of sections B and E (``data/start_found.toml``): what their
vignettes (``start3found-b*`` / ``start3found-e*``) cannot say, because they check only which
rules fire: thresholds at their boundary, a missing kidney function, the drug suggested, the
one finding of E4 with J1, and that each negative vignette is a real negative (evaluated, not
skipped for want of data)."""

from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from services.analysis import parse_bundle
from services.analysis.logic import analyze
from services.analysis.rules import load
from services.medications import current_thesaurus

_HERE = Path(__file__).parent / "fixtures" / "vignettes"
_spec = importlib.util.spec_from_file_location("vignettes_build_for_b_e", _HERE / "build.py")
assert _spec is not None
assert _spec.loader is not None
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)

THESAURUS = current_thesaurus(None)
NEW = ("B7", "B8", "B9", "B11", "E2", "E3", "E4")
NOT_EVALUABLE = ("B10", "E1")
DOUBT = (
    "new in v3: number and content read in a Spanish project's START v3 catalogue (see "
    "docs/stopp-start-v3.md, encoding 6), the English wording was not read; the summary is "
    "translated from it"
)
RAMIPRIL = ("C09AA05", "ramipril")
FUROSEMIDE = ("C03CA01", "furosémide")


def _egfr(value: float) -> list[tuple[str, float, str]]:
    return [(_build.EGFR, value, "mL/min/1.73m2")]


def _analyze(**kwargs: Any) -> Any:
    return analyze(parse_bundle(_build.bundle(**kwargs), today=date(2026, 1, 15)), THESAURUS)


def _fired(result: Any) -> set[str]:
    return {f.rule for f in result.findings}


def _skipped(result: Any) -> set[str]:
    return {n.rule for n in result.not_evaluated}


def test_each_criterion_is_encoded_or_listed_as_not_evaluable_with_its_doubt() -> None:
    data = load().stopp_start
    criteria = {c.id: c for c in data.criterion}
    skipped = {n.id: n for n in data.not_encoded}
    for rule in NEW:
        crit = criteria[f"START v3 {rule}"]
        assert crit.kind == "start", rule
        assert crit.status == "partial", rule
        assert crit.partial_reason, rule
        assert crit.doubt.startswith(DOUBT), rule
        assert not crit.text, rule
        assert f"START v3 {rule}" not in skipped
    for rule in NOT_EVALUABLE:
        item = skipped[f"START v3 {rule}"]
        assert item.doubt.startswith(DOUBT), rule
        assert item.reason, rule
        assert item.reason_fr, rule
        assert f"START v3 {rule}" not in criteria


@pytest.mark.parametrize(("egfr", "fires"), [(31, True), (30, False), (25, False)])
def test_b7_needs_a_kidney_function_above_30(egfr: float, fires: bool) -> None:
    result = _analyze(drugs=[RAMIPRIL], conditions=["I50"], labs=_egfr(egfr))
    assert ("START v3 B7" in _fired(result)) is fires
    assert "START v3 B7" not in _skipped(result)


def test_b7_without_a_kidney_function_is_not_evaluated() -> None:
    result = _analyze(drugs=[RAMIPRIL], conditions=["I50"])
    assert "START v3 B7" not in _fired(result)
    reported = {n.rule: n.missing for n in result.not_evaluated}
    assert reported["START v3 B7"] == [
        "fonction rénale (créatinine avec poids, âge et sexe, ou DFG)"
    ]


def test_b7_suggests_spironolactone_or_eplerenone_and_any_antagonist_suppresses_it() -> None:
    result = _analyze(drugs=[RAMIPRIL], conditions=["I50"], labs=_egfr(45))
    (b7,) = [f for f in result.findings if f.rule == "START v3 B7"]
    assert b7.atc == ["C03DA01", "C03DA04"]
    for atc in ("C03DA01", "C03DA02", "C03DA04"):
        result = _analyze(drugs=[RAMIPRIL, (atc, "antialdostérone")], conditions=["I50"])
        assert "START v3 B7" not in _fired(result) | _skipped(result), atc


def test_b8_suggests_a_gliflozin_and_its_fixed_combinations_suppress_it() -> None:
    result = _analyze(drugs=[FUROSEMIDE], conditions=["I132"])
    (b8,) = [f for f in result.findings if f.rule == "START v3 B8"]
    assert b8.atc == ["A10BK"]
    for atc in ("A10BK03", "A10BD15", "A10BD16", "A10BD19", "A10BD20", "A10BD21", "A10BD25"):
        result = _analyze(drugs=[FUROSEMIDE, (atc, "gliflozine")], conditions=["I50"])
        assert "START v3 B8" not in _fired(result), atc


def test_b9_needs_an_ace_inhibitor_or_arb_and_never_fires_with_b5() -> None:
    for atc in ("C09AA05", "C09BA05", "C09CA01", "C09DA03"):
        result = _analyze(drugs=[(atc, "inhibiteur du SRA")], conditions=["I50"])
        assert "START v3 B9" in _fired(result), atc
        assert "START v3 B5" not in _fired(result), atc
    (b9,) = [
        f
        for f in _analyze(drugs=[RAMIPRIL], conditions=["I50"]).findings
        if f.rule == "START v3 B9"
    ]
    assert b9.atc == ["C09DX04"]
    assert [d["atc"] for d in b9.evidence["drugs"]] == ["C09AA05"]
    hereditary = _analyze(drugs=[RAMIPRIL], conditions=["I50", "D841"])
    assert "START v3 B9" not in _fired(hereditary)


def test_b11_needs_both_the_heart_failure_and_the_iron_deficiency() -> None:
    both = _analyze(drugs=[RAMIPRIL], conditions=["I50", "D500"])
    (b11,) = [f for f in both.findings if f.rule == "START v3 B11"]
    assert sorted(c["icd10"] for c in b11.evidence["conditions"]) == ["D500", "I50"]
    assert b11.severity == "low"
    alone = _analyze(drugs=[RAMIPRIL], conditions=["E611"])
    assert "START v3 B11" not in _fired(alone)


@pytest.mark.parametrize(("rule", "code"), [("E2", "E833"), ("E3", "D638")])
def test_e2_and_e3_need_a_kidney_function_below_30(rule: str, code: str) -> None:
    for egfr, fires in ((29, True), (30, False)):
        result = _analyze(drugs=[FUROSEMIDE], conditions=[code], labs=_egfr(egfr))
        assert (f"START v3 {rule}" in _fired(result)) is fires, egfr
    missing = _analyze(drugs=[FUROSEMIDE], conditions=[code])
    assert f"START v3 {rule}" in _skipped(missing)


def test_e2_potassium_binders_do_not_count_and_calcium_carbonate_does() -> None:
    for atc, fires in (("V03AE01", True), ("V03AE05", False), ("A12AA04", False)):
        result = _analyze(drugs=[(atc, "chélateur")], conditions=["E833"], labs=_egfr(20))
        assert ("START v3 E2" in _fired(result)) is fires, atc


def test_e4_threshold_is_30_or_more_and_a_ckd_code_is_needed() -> None:
    amlodipine = ("C08CA01", "amlodipine")
    for egfr, fires in ((30, True), (29, False)):
        result = _analyze(drugs=[amlodipine], conditions=["N183", "R80"], labs=_egfr(egfr))
        assert ("START v3 E4" in _fired(result)) is fires, egfr
    proteinuria_alone = _analyze(drugs=[amlodipine], conditions=["R80"], labs=_egfr(45))
    assert "START v3 E4" not in _fired(proteinuria_alone) | _skipped(proteinuria_alone)
    orthostatic = _analyze(drugs=[amlodipine], conditions=["N183", "N392"], labs=_egfr(45))
    assert "START v3 E4" not in _fired(orthostatic)


def test_e4_with_j1_in_a_diabetic_is_one_finding_j1_citing_e4() -> None:
    result = _analyze(
        drugs=[("A10BA02", "metformine")], conditions=["E11", "N183", "R80"], labs=_egfr(45)
    )
    assert "START v3 E4" not in _fired(result)
    (j1,) = [f for f in result.findings if f.rule == "START v3 J1"]
    assert [a["rule"] for a in j1.evidence["also"]] == ["START v3 E4"]


def test_the_not_evaluable_criteria_are_reported_to_every_patient_on_a_drug() -> None:
    result = _analyze(drugs=[RAMIPRIL], conditions=["I48"], labs=_egfr(20))
    for rule in NOT_EVALUABLE:
        assert f"START v3 {rule}" in _skipped(result)
        assert f"START v3 {rule}" not in _fired(result)


def test_each_negative_vignette_is_evaluated_not_skipped() -> None:
    """A negative of B/E shows a boundary: its criterion is not reported as not evaluated."""
    names = sorted(_HERE.glob("start3found-[be]*-negative.json"))
    assert len(names) >= 2 * len(NEW) - 2
    for path in names:
        case = json.loads(path.read_text())
        result = analyze(parse_bundle(case["bundle"], today=date(2026, 1, 15)), THESAURUS)
        for _kind, rule in case["absent"]:
            assert rule not in _fired(result), path.name
            assert rule not in _skipped(result), path.name
