"""STOPP criteria carried over from v2, and the renal double report: what the vignettes
(``stopp3-*.json``) cannot say, because they check only which rules fire."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from services.analysis import parse_bundle
from services.analysis.logic import analyze
from services.analysis.rules import load
from services.medications import current_thesaurus

_BUILD = Path(__file__).parent / "fixtures" / "vignettes" / "build.py"
_spec = importlib.util.spec_from_file_location("vignettes_build_for_stopp", _BUILD)
assert _spec is not None
assert _spec.loader is not None
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)


def _analyze(**kwargs: Any) -> Any:
    return analyze(parse_bundle(_build.bundle(**kwargs)), current_thesaurus(None))


def test_deleted_v2_criteria_are_not_in_the_data() -> None:
    ids = {c.id for c in load().stopp_start.criterion} | {
        n.id for n in load().stopp_start.not_encoded
    }
    # v3 B1 is not v2 B1 (inhaled bronchodilator in mild-moderate asthma or COPD, deleted): the
    # Spanish START v3 catalogue gives B1 to the antihypertensive therapy of v2 A4
    (b1,) = [c for c in load().stopp_start.criterion if c.id == "START v3 B1"]
    assert "content of v2 A4" in b1.doubt
    assert not b1.conditions
    assert "START v3 B1" in ids
    # v3 H7 is not v2 H7 (COX-2 selective NSAIDs with cardiovascular disease, deleted): the
    # Spanish v3 list gives H7 to an NSAID with corticosteroids, the content of v2 H8
    (h7,) = [c for c in load().stopp_start.criterion if c.id == "STOPP v3 H7"]
    assert "content of v2 H8" in h7.doubt
    assert not h7.conditions
    assert h7.also_drugs == (("H02AB",),)
    # v3 C2 is not v2 C2 (aspirin with a peptic ulcer history, deleted): the data takes v2 C3
    (c2,) = [c for c in load().stopp_start.criterion if c.id == "STOPP v3 C2"]
    assert "content of v2 C3" in c2.doubt
    assert "A02BC" not in c2.without_drugs


def test_a_renal_stopp_criterion_and_the_dose_rule_give_one_finding() -> None:
    result = _analyze(
        drugs=[("B01AE07", "dabigatran", 400, 150, 2)],
        conditions=["I48"],
        labs=_build.renal(160, 55),
    )
    rules = [f.rule for f in result.findings]
    assert "STOPP v3 E2" not in rules
    (dose,) = [f for f in result.findings if f.kind == "dose" and "dabigatran" in f.rule]
    assert dose.severity == "contraindication"
    (also,) = dose.evidence["also"]
    assert also["rule"] == "STOPP v3 E2"
    assert also["label_fr"] == "Dabigatran et DFG < 30"
    assert also["labs"], "the kidney value the STOPP criterion used is kept"
    assert "Réduire" in dose.recommendation or "Contacter" in dose.recommendation


def test_the_merged_finding_keeps_the_stronger_severity() -> None:
    # digoxin 0.25 mg/day, CrCl ~21: the dose rule only says "monitor" (low), STOPP E1 is high
    result = _analyze(
        drugs=[("C01AA05", "digoxine", 400, 0.25, 1)],
        conditions=["I48"],
        labs=_build.renal(160, 55),
    )
    (dose,) = [f for f in result.findings if f.kind == "dose" and "digoxine" in f.rule]
    assert dose.severity == "high"
    assert [a["rule"] for a in dose.evidence["also"]] == ["STOPP v3 E1"]
    assert not [f for f in result.findings if f.rule == "STOPP v3 E1"]


def test_a_stopp_finding_on_a_drug_without_dose_rule_is_kept_whole() -> None:
    result = _analyze(
        drugs=[("M01AE01", "ibuprofène", 30, 400, 3), ("M01AB08", "étodolac", 30)],
        labs=_build.renal(160, 55),
    )
    (stopp,) = [f for f in result.findings if f.rule == "STOPP v3 E4"]
    assert set(stopp.atc) == {"M01AE01", "M01AB08"}
    (dose,) = [f for f in result.findings if f.kind == "dose"]
    assert "also" not in dose.evidence


CARRIED = [
    "B5", "B6", "B7", "B8", "B10", "C2", "C3", "C5", "C6", "D2", "D15", "D21", "D22",
    "F1", "F4", "G2", "H3", "H4", "H5", "J3", "J8", "L1",
]  # fmt: skip
"""The STOPP criteria encoded in encoding 3 of stopp_start.toml (docs/stopp-start-v3.md), with
the ids of the Spanish v3 list since encoding 5 (v2 D9, D12, D13, J5 are D15, D21, D22, J8;
v2 J6, androgens without hypogonadism, is not in that list and was removed)."""


def test_every_carried_criterion_has_a_positive_and_a_negative_vignette() -> None:
    cases = [json.loads(p.read_text()) for p in (_BUILD.parent).glob("stopp3-*.json")]
    known = {c.id for c in load().stopp_start.criterion}
    for number in CARRIED:
        rule = ["stopp", f"STOPP v3 {number}"]
        assert rule[1] in known, rule
        assert any(rule in c["expect"] for c in cases), f"no positive vignette for {rule[1]}"
        assert any(rule in c["absent"] for c in cases), f"no negative vignette for {rule[1]}"


def test_every_carried_criterion_marks_its_doubt_and_v2_origin() -> None:
    by_id = {c.id: c for c in load().stopp_start.criterion}
    for number in CARRIED:
        crit = by_id[f"STOPP v3 {number}"]
        assert crit.doubt, crit.id
        assert all((crit.label_fr, crit.message, crit.recommendation, crit.gp)), crit.id
        if number != "B5":  # new in v3, read in a translation: no v2 origin
            assert "content of v2 " in crit.doubt, crit.id
