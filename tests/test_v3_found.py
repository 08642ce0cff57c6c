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
    "C11", "C12", "D20", "I7", "K6", "D3", "D7", "D10", "H2", "H9", "J4", "C15", "I4", "K11",
    "K12",
}  # fmt: skip
NOT_EVALUABLE = {
    "D16", "D25", "I8", "J9", "L3", "L5", "B15", "B16", "F6", "I3", "I6", "C8", "C9", "D5", "D9",
    "L4",
}  # fmt: skip
RENUMBERED = {
    "C10": "C10", "D4": "D3", "D6": "D4", "D8": "D5", "D12": "D6", "D13": "D7", "D14": "D8",
    "D15": "D9", "D21": "D12", "D22": "D13", "D24": "D14", "G4": "G5", "H7": "H8", "H8": "H9",
    "I5": "I2", "J8": "J5",
}  # fmt: skip
"""Encoding 5: criteria carried from v2, their id now read in the Spanish list → their v2 id."""
SPLIT = {"D17": "D11", "D18": "D11", "I1": "I1", "I2": "I1", "J5": "J4", "J6": "J4"}
"""Encoding 5: one v2 criterion given as two of the Spanish list → its v2 id."""


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


def test_an_nsaid_with_heart_failure_and_a_loop_diuretic_is_b19_alone() -> None:
    # v2 H2 (NSAID with heart failure) was removed in encoding 5: its content is B19's, and the
    # list's H2 is an NSAID with a systolic pressure above 170 mmHg
    result = _analyze(
        drugs=[("M01AE01", "ibuprofène", 30), ("C03CA01", "furosémide")], conditions=["I50"]
    )
    rules = [f.rule for f in result.findings if f.kind == "stopp"]
    assert "STOPP v3 H2" not in rules
    (b19,) = [f for f in result.findings if f.rule == "STOPP v3 B19"]
    assert "also" not in b19.evidence


def test_the_renumbered_criteria_say_where_their_id_was_read_and_their_v2_origin() -> None:
    doubts = {c.id: c.doubt for c in load().stopp_start.criterion}
    for rule, v2 in {**RENUMBERED, **SPLIT}.items():
        doubt = doubts[f"STOPP v3 {rule}"]
        assert f"v3 number {rule} read in the Spanish v3 list of encoding 4" in doubt, rule
        assert "the English wording was not read" in doubt, rule
        assert f"content of v2 {v2}" in doubt, rule


def test_the_v2_contents_absent_from_the_spanish_list_are_gone() -> None:
    data = load().stopp_start
    summaries = " | ".join(c.summary for c in data.criterion)
    for gone in ("without PPI prophylaxis", "Non-selective beta-blocker with asthma", "Androgens"):
        assert gone not in summaries, gone
    assert not [c for c in data.criterion if c.same_finding_as == "STOPP v3 H2"]


def test_silodosin_is_excepted_from_i5() -> None:
    result = _analyze(drugs=[("G04CA04", "silodosine")], conditions=["R55"])
    assert "STOPP v3 I5" not in [f.rule for f in result.findings]


def test_an_antimuscarinic_with_constipation_is_one_f3_finding_citing_i4() -> None:
    result = _analyze(drugs=[("G04BD04", "oxybutynine")], conditions=["K590"])
    stopp = [f.rule for f in result.findings if f.kind == "stopp"]
    assert "STOPP v3 I4" not in stopp
    (f3,) = [f for f in result.findings if f.rule == "STOPP v3 F3"]
    assert [a["rule"] for a in f3.evidence["also"]] == ["STOPP v3 I4"]
    # a constipating drug that I4 does not read (an opioid): F3 alone, citing nothing
    result = _analyze(
        drugs=[("N02AX02", "tramadol", 30), ("A06AD65", "macrogol", 30)], conditions=["K590"]
    )
    (f3,) = [f for f in result.findings if f.rule == "STOPP v3 F3"]
    assert "also" not in f3.evidence


def test_an_oestrogen_with_thromboembolism_is_one_c15_finding_citing_j6() -> None:
    result = _analyze(drugs=[("G03CA03", "estradiol")], conditions=["I26"], sex="female")
    stopp = [f.rule for f in result.findings if f.kind == "stopp"]
    assert "STOPP v3 J6" not in stopp
    (c15,) = [f for f in result.findings if f.rule == "STOPP v3 C15"]
    assert [a["rule"] for a in c15.evidence["also"]] == ["STOPP v3 J6"]
    # the kept finding names every hormone taken: J6 (oestrogens) merged into it loses no drug
    result = _analyze(
        drugs=[("G03CA03", "estradiol"), ("G03BA03", "testostérone")],
        conditions=["I82"],
        sex="female",
    )
    (c15,) = [f for f in result.findings if f.rule == "STOPP v3 C15"]
    assert set(c15.atc) == {"G03CA03", "G03BA03"}
    # an androgen alone: C15 alone, J6 (oestrogens) not involved
    result = _analyze(drugs=[("G03BA03", "testostérone")], conditions=["I82"], sex="male")
    (c15,) = [f for f in result.findings if f.rule == "STOPP v3 C15"]
    assert "also" not in c15.evidence


def test_a_same_finding_twin_reads_no_drug_nor_condition_its_kept_criterion_does_not() -> None:
    # the absorbed criterion must fire only where the kept one does, or a drug would be lost
    data = {c.id: c for c in load().stopp_start.criterion}
    for absorbed, kept in (("STOPP v3 I4", "STOPP v3 F3"), ("STOPP v3 J6", "STOPP v3 C15")):
        assert data[absorbed].same_finding_as == kept
        for code in data[absorbed].drugs:
            assert any(code.startswith(p) for p in data[kept].drugs), (absorbed, code)
        for code in data[absorbed].conditions:
            assert any(code.startswith(p) for p in data[kept].conditions), (absorbed, code)


def test_k11_and_k12_need_recurrent_falls() -> None:
    # the Spanish list names no falls condition for them; this data reads them as K1-K10
    for rule, drug in (("K11", ("C02AC05", "moxonidine")), ("K12", ("G04BD08", "solifénacine"))):
        without = [f.rule for f in _analyze(drugs=[drug], conditions=["I10"]).findings]
        with_falls = [f.rule for f in _analyze(drugs=[drug], conditions=["W19"]).findings]
        assert f"STOPP v3 {rule}" not in without, rule
        assert f"STOPP v3 {rule}" in with_falls, rule
