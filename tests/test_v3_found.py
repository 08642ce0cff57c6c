"""STOPP v3 criteria read in a Spanish version of the v3 list (encoding 4): what their vignettes
(``v3found-*.json``) cannot say, because they check only which rules fire."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from services.analysis import parse_bundle
from services.analysis.logic import analyze
from services.analysis.rules import load
from services.medications import current_thesaurus

_HERE = Path(__file__).parent / "fixtures" / "vignettes"
_spec = importlib.util.spec_from_file_location("vignettes_build_for_v3found", _HERE / "build.py")
assert _spec is not None
assert _spec.loader is not None
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)

SPANISH = "Spanish version of the v3 list"
FOUND = {
    "B17", "B18", "B19", "B21", "C7", "C13", "C14", "C16", "D11", "D19", "D23", "E7", "E8",
    "E9", "E10", "F5", "F7", "F8", "J7", "J10", "K5", "K7", "K8", "K9", "K10", "L6", "B20",
    "C11", "C12", "D20", "I7", "K6",
}  # fmt: skip
NOT_EVALUABLE = {"D16", "D25", "I8", "J9", "L3", "L5", "B15", "B16", "F6", "I3", "I6"}


def _analyze(**kwargs: Any) -> Any:
    return analyze(parse_bundle(_build.bundle(**kwargs)), current_thesaurus(None))


def test_each_criterion_read_in_the_spanish_list_says_so_and_has_no_english_text() -> None:
    data = load().stopp_start
    found = {c.id.rsplit(" ", 1)[-1]: c for c in data.criterion if SPANISH in c.doubt}
    assert set(found) == FOUND
    for crit in found.values():
        assert not crit.text, f"{crit.id}: the English wording was not read"
        assert "English wording was not read" in crit.doubt
        assert crit.label_fr
    not_evaluable = {n.id.rsplit(" ", 1)[-1] for n in data.not_encoded if SPANISH in n.doubt}
    assert not_evaluable == NOT_EVALUABLE


def test_each_criterion_read_in_the_spanish_list_has_a_positive_and_a_negative_vignette() -> None:
    for rule in FOUND:
        slug = f"v3found-{rule.lower()}-"
        cases = [json.loads(p.read_text()) for p in _HERE.glob(f"{slug}*.json")]
        negatives = [c for c in cases if c["name"].endswith("-negative")]
        assert len(cases) == 2, rule
        assert len(negatives) == 1, rule
        assert negatives[0]["absent"] == [["stopp", f"STOPP v3 {rule}"]]


@pytest.mark.parametrize(
    ("rule", "drug"),
    [
        ("E7", ("C03DA01", "spironolactone")),
        ("E8", ("J01XE01", "nitrofurantoïne", 3)),
        ("E10", ("L04AX03", "méthotrexate")),
        ("E1", ("C01AA05", "digoxine", 200, 0.125, 1)),
    ],
)
def test_a_new_renal_criterion_is_cited_by_the_dose_finding_of_the_same_drug(
    rule: str, drug: tuple[Any, ...]
) -> None:
    # CrCl ~21 mL/min: the SmPC contraindication and the STOPP threshold both hold
    result = _analyze(drugs=[drug], labs=_build.renal(160, 55))
    assert not [f for f in result.findings if f.rule == f"STOPP v3 {rule}"]
    (dose,) = [f for f in result.findings if f.kind == "dose"]
    assert [a["rule"] for a in dose.evidence["also"]] == [f"STOPP v3 {rule}"]


def test_the_p_glycoprotein_criterion_names_the_inhibitor_in_its_evidence() -> None:
    result = _analyze(
        drugs=[("B01AF02", "apixaban"), ("C01BD07", "dronédarone")], conditions=["I48"]
    )
    (c14,) = [f for f in result.findings if f.rule == "STOPP v3 C14"]
    assert set(c14.atc) == {"B01AF02", "C01BD07"}


def test_aspirin_with_a_coronary_stent_is_not_primary_prevention() -> None:
    result = _analyze(
        drugs=[("B01AC06", "acide acétylsalicylique", 400, 75, 1)], conditions=["Z955"]
    )
    assert not [f for f in result.findings if f.rule == "STOPP v3 C16"]


def test_a_z_drug_without_a_start_date_is_reported_not_evaluated() -> None:
    bundle = _build.bundle(drugs=[("N05CF01", "zopiclone")])
    for entry in bundle["entry"]:
        entry["resource"].pop("effectivePeriod", None)
    result = analyze(parse_bundle(bundle), current_thesaurus(None))
    assert "STOPP v3 D11" in [n.rule for n in result.not_evaluated]


def test_an_nsaid_with_heart_failure_and_a_loop_diuretic_gives_one_finding_citing_b19() -> None:
    # STOPP v3 H2 of the data (v2 H2, renumbered in the Spanish list) flags the same situation
    result = _analyze(
        drugs=[("M01AE01", "ibuprofène", 30), ("C03CA01", "furosémide")], conditions=["I50"]
    )
    rules = [f.rule for f in result.findings if f.kind == "stopp"]
    assert "STOPP v3 B19" not in rules
    (h2,) = [f for f in result.findings if f.rule == "STOPP v3 H2"]
    assert [a["rule"] for a in h2.evidence["also"]] == ["STOPP v3 B19"]


def test_the_existing_criteria_the_spanish_list_numbers_differently_say_so() -> None:
    doubts = {c.id: c.doubt for c in load().stopp_start.criterion}
    for rule in ("C8", "D5", "D10", "G5", "H9", "I2", "J4", "J5"):
        assert "Spanish v3 list read in encoding 4" in doubts[f"STOPP v3 {rule}"], rule
