"""Pure parts of the analysis engine: kidney function, PDC, parsing of bad bundles, rules
loading, and properties (an unrelated drug never removes a finding; entry order never
changes the answer)."""

from __future__ import annotations

import copy
import json
import random
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.analysis import BundleError, Drug, find_redundancies, parse_bundle
from services.analysis.logic import (
    analyze,
    ckd_epi_2021,
    cockcroft_gault,
    proportion_of_days_covered,
)
from services.analysis.models import Dispense
from services.analysis.rules import (
    TABLE_BEGIN,
    TABLE_END,
    RuleError,
    RuleSet,
    load,
    status_markdown,
)
from services.medications import current_thesaurus

VIGNETTES = sorted((Path(__file__).parent / "fixtures" / "vignettes").glob("*.json"))
THESAURUS = current_thesaurus(None)


def _case(name: str) -> dict[str, Any]:
    path = Path(__file__).parent / "fixtures" / "vignettes" / f"{name}.json"
    return json.loads(path.read_text())["bundle"]  # type: ignore[no-any-return]


def _run(bundle: dict[str, Any]) -> Any:
    return analyze(parse_bundle(bundle, today=date(2026, 1, 15)), THESAURUS)


# ---------------------------------------------------------------- kidney function
def test_cockcroft_gault_reference_values() -> None:
    # (140 - 80) * 60 / (72 * 1.0) = 50 ; female x 0.85
    assert cockcroft_gault(age=80, weight_kg=60, creatinine_mg_dl=1.0, female=False) == 50
    assert cockcroft_gault(age=80, weight_kg=60, creatinine_mg_dl=1.0, female=True) == 42.5
    with pytest.raises(ValueError):
        cockcroft_gault(age=80, weight_kg=0, creatinine_mg_dl=1.0, female=True)


def test_ckd_epi_2021_reference_values() -> None:
    # by hand: 142 x 1.111^-1.2 x 0.9938^60 = 86.2
    # woman, 0.8 mg/dL: 142 x 1.143^-1.2 x 0.9938^60 x 1.012 = 84.3
    assert round(ckd_epi_2021(age=60, creatinine_mg_dl=1.0, female=False)) == 86
    assert round(ckd_epi_2021(age=60, creatinine_mg_dl=0.8, female=True)) == 84


def test_creatinine_in_umol_is_converted_and_the_method_stated() -> None:
    result = _run(_case("dose-doac-rivaroxaban"))
    dose = next(f for f in result.findings if f.kind == "dose")
    assert dose.evidence["renal"]["method"] == "clairance de Cockcroft-Gault"
    # 80-year-old woman, 55 kg, 120 µmol/L = 1.357 mg/dL -> 60*55/(72*1.357)*0.85 = 28.7
    assert dose.evidence["renal"]["value"] == pytest.approx(28.7, abs=0.1)


def test_egfr_from_the_record_is_used_when_there_is_no_weight() -> None:
    result = _run(_case("dose-metformin-egfr"))
    dose = next(f for f in result.findings if f.kind == "dose")
    assert "LOINC 98979-8" in dose.evidence["renal"]["method"]
    assert dose.severity == "high"
    assert "1 000 mg" in dose.recommendation


# ---------------------------------------------------------------- adherence
def test_pdc_carries_early_refills_over_and_lists_gaps() -> None:
    start, end = date(2025, 1, 1), date(2025, 4, 11)  # 100 days
    items = [
        Dispense(label="x", handed_over=date(2025, 1, 1), days_supply=30),
        Dispense(label="x", handed_over=date(2025, 1, 20), days_supply=30),  # early: carried
        Dispense(label="x", handed_over=date(2025, 3, 22), days_supply=30),
    ]
    pdc, gaps = proportion_of_days_covered(items, start=start, end=end)
    assert pdc == pytest.approx(0.8)
    assert gaps == [(date(2025, 3, 2), date(2025, 3, 22))]


def test_adherence_finding_reports_the_gaps() -> None:
    result = _run(_case("adh-poor"))
    finding = next(f for f in result.findings if f.kind == "adherence")
    assert finding.evidence["pdc"] < 0.8
    assert finding.evidence["gaps"]


# ---------------------------------------------------------------- redundancy (public)
def test_find_redundancies_is_pure_and_public() -> None:
    found = find_redundancies(
        [Drug(label="ibuprofène", atc="M01AE01"), Drug(label="diclofénac", atc="M01AB05")]
    )
    assert [f.rule for f in found] == ["STOPP v3 A3 (anti-inflammatoires non stéroïdiens)"]
    assert found[0].atc == ["M01AB05", "M01AE01"]
    assert find_redundancies([Drug(label="a", atc="R03AC02"), Drug(label="b", atc="R03AC12")]) == []


# ---------------------------------------------------------------- bad bundles
@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"resourceType": "Patient"}', b'{"resourceType":"Bundle","entry":{}}'],
)
def test_unreadable_input_is_a_bundle_error(raw: bytes) -> None:
    with pytest.raises(BundleError):
        parse_bundle(raw)


def test_no_patient_is_reported_not_crashed() -> None:
    bundle = _case("stopp-d8-benzo")
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    result = _run(bundle)
    assert not [f for f in result.findings if f.kind in ("stopp", "start")]
    assert any(n.rule == "patient" for n in result.not_evaluated)
    assert any(n.rule == "STOPP v3 D8" and "âge" in n.missing[0] for n in result.not_evaluated)
    assert result.bpm_eligibility.eligible is False


def test_impossible_values_and_future_birth_date_are_set_aside() -> None:
    bundle = _case("dose-doac-rivaroxaban")
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Observation":
            resource["valueQuantity"]["value"] = 0 if "29463" in str(resource) else -3
        if resource["resourceType"] == "Patient":
            resource["birthDate"] = "2090-01-01"
    result = _run(bundle)
    rules = {n.rule: n.missing for n in result.not_evaluated}
    assert "birthDate: in the future" in rules["patient"]
    assert any("impossible value" in m for m in rules["LOINC 29463-7"])
    assert any("impossible value" in m for m in rules["LOINC 14682-9"])
    assert not [f for f in result.findings if f.kind == "dose"]
    assert "RCP 4.2 rivaroxaban" in rules


def test_unknown_codes_give_no_finding_and_a_reason() -> None:
    bundle = _case("neg-paracetamol")
    bundle["entry"].append(
        {
            "resource": {
                "resourceType": "MedicationStatement",
                "status": "active",
                "medicationCodeableConcept": {"text": "potion maison"},
            }
        }
    )
    result = _run(bundle)
    assert result.findings == []
    assert any("potion maison" in " ".join(n.missing) for n in result.not_evaluated)


# ---------------------------------------------------------------- rules as data
def test_rules_load_validated_and_indexed() -> None:
    rules = load()
    assert len(rules.renal.drug) >= 40
    assert all(d.source for d in rules.renal.drug)
    assert all(
        c.source and c.id.startswith(("STOPP v3", "START v3")) for c in rules.stopp_start.criterion
    )
    assert rules.criteria_for({"N05BA04"}, set())  # benzodiazepine -> D5 and others
    assert all(
        "N05BA" in "".join(c.drugs) or "N05" in "".join(c.drugs)
        for c in rules.criteria_for({"N05BA04"}, set())
        if c not in rules.always  # criteria on labs only (START v3 B1) are always candidates
    )


def test_a_rules_file_with_an_unknown_field_is_refused(tmp_path: Path) -> None:
    from services.analysis.rules import RenalFile

    with pytest.raises(msgspec.ValidationError):
        msgspec.toml.decode(
            b'version = "x"\n[[drug]]\nname = "a"\natc = []\nsource = "s"\nbands = []\nbogus = 1\n',
            type=RenalFile,
        )


# ---------------------------------------------------------------- properties
UNRELATED = ["D01AC01", "S01XA20", "D11AX01", "D07AC01", "V03AE02", "A07EC02", "C05AA01"]
BUNDLES = [json.loads(p.read_text())["bundle"] for p in VIGNETTES]


def _keys(result: Any) -> set[tuple[str, str]]:
    return {(f.kind, f.rule) for f in result.findings}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BUNDLES), st.sampled_from(UNRELATED))
def test_adding_an_unrelated_drug_never_removes_a_finding(bundle: dict[str, Any], atc: str) -> None:
    before = _keys(_run(bundle))
    extended = copy.deepcopy(bundle)
    extended["entry"].append(
        {
            "resource": {
                "resourceType": "MedicationStatement",
                "status": "active",
                "medicationCodeableConcept": {
                    "coding": [{"system": "http://www.whocc.no/atc", "code": atc}]
                },
                "effectivePeriod": {"start": "2025-01-01"},
            }
        }
    )
    assert before <= _keys(_run(extended))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BUNDLES), st.integers(min_value=0, max_value=2**32 - 1))
def test_entry_order_never_changes_the_result(bundle: dict[str, Any], seed: int) -> None:
    shuffled = copy.deepcopy(bundle)
    random.Random(seed).shuffle(shuffled["entry"])
    assert msgspec.json.encode(_run(bundle)) == msgspec.json.encode(_run(shuffled))


def test_the_status_table_in_the_docs_is_the_one_generated_from_the_data() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "stopp-start-v3.md").read_text()
    begin, end = doc.index(TABLE_BEGIN), doc.index(TABLE_END) + len(TABLE_END)
    assert doc[begin:end] == status_markdown(load()), (
        "regenerate the table of docs/stopp-start-v3.md (command in that file)"
    )
    for crit in load().stopp_start.criterion:
        assert f"| {crit.id} |" in doc


def test_every_criterion_is_evaluable_or_says_why_not() -> None:
    rules = load()
    assert rules.stopp_start.criterion
    for crit in rules.stopp_start.criterion:
        assert crit.drugs or crit.conditions or crit.labs or crit.labs_any, crit.id
        assert crit.kind == "stopp" or crit.start_atc, crit.id
        assert crit.source, crit.id
        assert crit.label_fr, crit.id
        assert crit.message, crit.id
        assert crit.recommendation, crit.id
        if crit.status == "partial":
            assert crit.partial_reason, crit.id
        # either the wording was read in a source, or the doubt says what is unverified
        assert (crit.text and crit.text_source) or crit.doubt, crit.id
    for item in rules.stopp_start.not_encoded:
        assert item.reason, item.id
        assert item.reason_fr, item.id
        assert item.label_fr, item.id
        assert (item.text and item.text_source) or item.doubt or item.summary, item.id


def test_criteria_not_evaluable_are_reported_with_their_reason() -> None:
    rules = load()
    result = _run(_case("stopp-k2-negative"))  # 80 years old, one drug
    reported = {n.rule: n.missing for n in result.not_evaluated}
    for item in rules.stopp_start.not_encoded:
        assert reported.get(item.id) == [item.reason_fr], item.id  # French, for the counter
    young = _run(_case("neg-young-adult"))
    assert not any(n.rule.startswith(("STOPP v3", "START v3")) for n in young.not_evaluated)


def test_a_partial_criterion_without_its_reason_or_a_bad_twin_is_refused() -> None:
    rules = load()
    data = rules.stopp_start
    partial = next(c for c in data.criterion if c.status == "partial")
    broken = msgspec.structs.replace(partial, partial_reason="")
    others = tuple(c for c in data.criterion if c.id != partial.id)
    with pytest.raises(RuleError, match="partial"):
        RuleSet(
            msgspec.structs.replace(data, criterion=(*others, broken)),
            rules.acb,
            rules.renal,
            rules.redundancy,
            rules.adherence,
        )
    twin = msgspec.structs.replace(partial, same_finding_as="STOPP v3 Z99")
    with pytest.raises(RuleError, match="same_finding_as"):
        RuleSet(
            msgspec.structs.replace(data, criterion=(*others, twin)),
            rules.acb,
            rules.renal,
            rules.redundancy,
            rules.adherence,
        )


def test_opioids_without_laxative_give_one_finding_citing_both_criteria() -> None:
    result = _run(_case("start-k2-opioid-laxative"))
    rules = [f.rule for f in result.findings]
    assert "STOPP v3 L2" in rules
    assert "START v3 K2" not in rules
    stopp = next(f for f in result.findings if f.rule == "STOPP v3 L2")
    assert [a["rule"] for a in stopp.evidence["also"]] == ["START v3 K2"]


def test_rate_limiting_drug_with_heart_block_cites_the_condition() -> None:
    result = _run(_case("stopp-b4-digoxin-heart-block"))
    finding = next(f for f in result.findings if f.rule == "STOPP v3 B4")
    assert finding.atc == ["C01AA05"]
    assert [c["icd10"] for c in finding.evidence["conditions"]] == ["I442"]
    assert finding.evidence["not_checked"]
    assert "doubt" not in finding.evidence  # wording and number read in the article


def _aspirin_with(partner: tuple[str, str], dose: float, per_day: int) -> Any:
    bundle = _case("int-dose-conditional-aspirin-doac")
    for entry in bundle["entry"]:
        resource = entry["resource"]
        coding = resource.get("medicationCodeableConcept", {}).get("coding", [{}])[0]
        if coding.get("code") == "B01AC06":
            resource["dosage"][0]["doseAndRate"][0]["doseQuantity"]["value"] = dose
            resource["dosage"][0]["timing"]["repeat"]["frequency"] = per_day
        elif coding.get("code") == "B01AF01":
            coding["code"], coding["display"] = partner
    result = _run(bundle)
    return next(f for f in result.findings if "ACIDE ACETYLSALICYLIQUE" in f.rule)


def test_dose_conditional_interaction_is_evaluated_when_the_dose_settles_it() -> None:
    high = _aspirin_with(("B01AF01", "rivaroxaban"), 1000, 3)  # anti-inflammatory doses
    assert high.severity == "contraindication"
    assert high.evidence["condition_evaluated"] is True
    low = _aspirin_with(("M01AE01", "ibuprofène"), 75, 1)  # antiplatelet dose
    assert low.severity == "consider"
    assert low.evidence["condition_met"]["daily_dose_mg"] == 75


def test_dose_conditional_interaction_needing_context_reports_every_level() -> None:
    # 75 mg/day with an anticoagulant: the level depends on a history of ulcer (not read)
    found = _aspirin_with(("B01AF01", "rivaroxaban"), 75, 1)
    assert found.severity == "contraindication"
    assert found.evidence["condition_evaluated"] is False
    assert len(found.evidence["conditions"]) == 3
    assert found.confidence < 0.9


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
RESOURCE_TYPES = [
    "Patient",
    "MedicationStatement",
    "MedicationDispense",
    "Condition",
    "Observation",
]
FIELDS = [
    "birthDate",
    "gender",
    "status",
    "medicationCodeableConcept",
    "effectivePeriod",
    "dosage",
    "whenHandedOver",
    "daysSupply",
    "code",
    "category",
    "clinicalStatus",
    "valueQuantity",
    "effectiveDateTime",
    "onsetDateTime",
    "id",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(RESOURCE_TYPES),
            st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6),
        ),
        max_size=6,
    ),
    JSON,
)
def test_malformed_resources_never_crash_the_engine(resources: list[Any], timestamp: Any) -> None:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": kind, **fields}} for kind, fields in resources],
    }
    if isinstance(timestamp, str):
        bundle["timestamp"] = timestamp
    try:
        record = parse_bundle(bundle, today=date(2026, 1, 15))
    except BundleError:
        return
    analyze(record, THESAURUS)


def test_dates_out_of_range_and_boolean_numbers_are_set_aside() -> None:
    bundle = _case("adh-poor")
    bundle["timestamp"] = "0001-01-01"
    with pytest.raises(BundleError):
        parse_bundle(bundle)
    bundle = _case("adh-poor")
    bundle["entry"][2]["resource"]["whenHandedOver"] = "9999-12-31"
    bundle["entry"][3]["resource"]["daysSupply"]["value"] = True
    result = _run(bundle)
    assert [n.missing for n in result.not_evaluated if n.rule == "dispense"]


def _as_requests(bundle: dict[str, Any], *, status: str = "active") -> dict[str, Any]:
    """The same case with its statements written as prescription lines (MedicationRequest),
    as Hygie's own FHIR export gives them."""
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "MedicationStatement":
            request: dict[str, Any] = {
                "resourceType": "MedicationRequest",
                "status": status,
                "intent": "order",
                "medicationCodeableConcept": resource["medicationCodeableConcept"],
                "authoredOn": "2025-12-01",
            }
            if "dosage" in resource:
                request["dosageInstruction"] = resource["dosage"]
            entry["resource"] = request
    return bundle


def test_active_prescription_lines_are_treatments_the_engine_sees() -> None:
    by_statement = _run(_case("stopp-d8-benzo"))
    by_request = _run(_as_requests(_case("stopp-d8-benzo")))
    assert "STOPP v3 D8" in {f.rule for f in by_statement.findings}
    assert {f.rule for f in by_request.findings} == {f.rule for f in by_statement.findings}


def test_a_completed_prescription_line_is_no_longer_a_treatment() -> None:
    completed = _run(_as_requests(_case("stopp-d8-benzo"), status="completed"))
    assert "STOPP v3 D8" not in {f.rule for f in completed.findings}


def test_a_drug_both_stated_and_prescribed_is_counted_once() -> None:
    bundle = _case("stopp-d8-benzo")
    requests = _as_requests(_case("stopp-d8-benzo"))["entry"]
    bundle["entry"] += [e for e in requests if e["resource"]["resourceType"] == "MedicationRequest"]
    record = parse_bundle(bundle, today=date(2026, 1, 15))
    assert len(record.drugs) == len({(d.atc, d.cis, d.cip13) for d in record.drugs})
    assert not [f for f in _run(bundle).findings if f.kind == "redundancy"]
