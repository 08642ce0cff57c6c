"""START v3 criteria new in v3 of sections D, F, G, H, I, K (``data/start_found.toml``): what
their vignettes (``start3found-*.json``) cannot say, because they check only which rules fire."""

from __future__ import annotations

import importlib.util
from datetime import date
from pathlib import Path
from typing import Any

from services.analysis import parse_bundle
from services.analysis.logic import analyze
from services.analysis.rules import load
from services.medications import current_thesaurus

_HERE = Path(__file__).parent / "fixtures" / "vignettes"
_spec = importlib.util.spec_from_file_location("vignettes_build_for_dfghik", _HERE / "build.py")
assert _spec is not None
assert _spec.loader is not None
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)

THESAURUS = current_thesaurus(None)
IBUPROFEN = ("M01AE01", "ibuprofène", 30, 400, 3)
NEW = ("D4", "D7", "F2", "F3", "F5", "F6", "G1", "I4", "I5", "K3")
NOT_EVALUABLE = ("F7", "H6", "H7")
DOUBT = (
    "new in v3: number and content read in a Spanish project's START v3 catalogue (see "
    "docs/stopp-start-v3.md, encoding 6), the English wording was not read; the summary is "
    "translated from it"
)


def _analyze(**kwargs: Any) -> Any:
    return analyze(parse_bundle(_build.bundle(**kwargs), today=date(2026, 1, 15)), THESAURUS)


def test_each_criterion_is_encoded_or_listed_as_not_evaluable_with_its_doubt() -> None:
    data = load().stopp_start
    criteria = {c.id: c for c in data.criterion}
    skipped = {n.id: n for n in data.not_encoded}
    for rule in NEW:
        crit = criteria[f"START v3 {rule}"]
        assert crit.kind == "start", rule
        assert crit.doubt.startswith(DOUBT), rule
        assert not crit.text, rule
    for rule in NOT_EVALUABLE:
        item = skipped[f"START v3 {rule}"]
        assert item.doubt.startswith(DOUBT), rule
        assert item.reason, rule
        assert item.reason_fr, rule


def test_an_nsaid_with_an_ulcer_history_is_one_h1_finding_citing_f3() -> None:
    result = _analyze(drugs=[IBUPROFEN], conditions=["K25"])
    rules = [f.rule for f in result.findings]
    assert "START v3 F3" not in rules
    (h1,) = [f for f in result.findings if f.rule == "STOPP v3 H1"]
    assert [a["rule"] for a in h1.evidence["also"]] == ["START v3 F3"]
    # without the ulcer, F3 alone
    result = _analyze(drugs=[IBUPROFEN])
    (f3,) = [f for f in result.findings if f.rule == "START v3 F3"]
    assert "STOPP v3 H1" not in [f.rule for f in result.findings]
    assert f3.atc == ["A02BC"]


def test_the_finding_suggests_the_criterion_s_drug_not_the_class_that_suppresses_it() -> None:
    result = _analyze(drugs=[("N02BE01", "paracétamol")], conditions=["G250"])
    (d7,) = [f for f in result.findings if f.rule == "START v3 D7"]
    assert d7.atc == ["C07AA05"]
    result = _analyze(drugs=[("N02BE01", "paracétamol")], conditions=["G318"])
    (d4,) = [f for f in result.findings if f.rule == "START v3 D4"]
    assert d4.atc == ["N06DA03"]


def test_a_pde5_inhibitor_is_never_suggested_beside_a_nitrate_or_related_drug() -> None:
    for atc in ("C01DA02", "C01DA14", "C01DX12", "C01DX16", "C02KX05"):
        result = _analyze(sex="male", drugs=[(atc, "dérivé nitré")], conditions=["N484"])
        assert "START v3 I5" not in [f.rule for f in result.findings], atc


def test_a_criterion_for_one_sex_waits_for_the_sex() -> None:
    bundle = _build.bundle(sex="male", drugs=[("C09AA05", "ramipril")], conditions=["N484"])
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    del patient["gender"]
    result = analyze(parse_bundle(bundle, today=date(2026, 1, 15)), THESAURUS)
    assert "START v3 I5" not in [f.rule for f in result.findings]
    assert "START v3 I5" in [n.rule for n in result.not_evaluated]


def test_short_acting_bronchodilators_do_not_satisfy_g1() -> None:
    for atc in ("R03AC02", "R03AC03", "R03BB01", "R03AL01", "R03AL02"):
        result = _analyze(drugs=[(atc, "bronchodilatateur de courte durée")], conditions=["J44"])
        assert "START v3 G1" in [f.rule for f in result.findings], atc
