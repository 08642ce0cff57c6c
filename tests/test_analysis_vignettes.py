"""Clinical vignettes (tests/fixtures/vignettes/*.json): each FHIR Bundle with the findings
the engine must and must not raise. Built by tests/fixtures/vignettes/build.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from services.analysis import parse_bundle
from services.analysis.logic import analyze
from services.medications import current_thesaurus

VIGNETTES = sorted((Path(__file__).parent / "fixtures" / "vignettes").glob("*.json"))
STRONG = {"contraindication", "avoid", "high"}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _matches(kind: str, rule: str, text: str) -> bool:
    """A STOPP/START rule is its criterion id, so it is matched exactly: a substring test
    would let "STOPP v3 K1" be met (or an `absent` check be failed) by K10. An empty text
    means any finding of the kind. Other kinds (interaction, dose, redundancy, adherence)
    carry longer rule texts (thesaurus entry, SmPC section) that vignettes cite in part."""
    if kind in {"stopp", "start"}:
        return text == "" or rule == text
    return text in rule


def _has(findings: list[Any], kind: str, text: str) -> bool:
    return any(f.kind == kind and _matches(kind, f.rule, text) for f in findings)


def test_stopp_start_expectations_name_a_whole_criterion_id() -> None:
    """A vignette that names a STOPP/START criterion names its whole id (or none)."""
    pattern = re.compile(r"(STOPP|START) v3 [A-M][0-9]+")
    for path in VIGNETTES:
        case = _load(path)
        for kind, text in case["expect"] + case["absent"]:
            if kind in {"stopp", "start"} and text:
                assert pattern.fullmatch(text), f"{path.name}: {text!r}"


def test_criterion_ids_match_exactly() -> None:
    assert _matches("stopp", "STOPP v3 K1", "STOPP v3 K1")
    assert not _matches("stopp", "STOPP v3 K10", "STOPP v3 K1")
    assert _matches("stopp", "STOPP v3 K10", "")
    assert _matches("interaction", "ANSM 2019-09: amiodarone + x", "ANSM")


def test_there_are_at_least_sixty_vignettes() -> None:
    assert len(VIGNETTES) >= 60


@pytest.mark.parametrize("path", VIGNETTES, ids=lambda p: p.stem)
def test_vignette(path: Path) -> None:
    case = _load(path)
    result = analyze(parse_bundle(case["bundle"]), current_thesaurus(None))
    summary = [(f.kind, f.rule, f.severity) for f in result.findings]
    for kind, text in case["expect"]:
        assert _has(result.findings, kind, text), f"expected {kind} {text!r}; got {summary}"
    for kind, text in case["absent"]:
        assert not _has(result.findings, kind, text), f"unexpected {kind} {text!r}: {summary}"
    if case.get("eligible") is not None:
        assert result.bpm_eligibility.eligible is case["eligible"], result.bpm_eligibility
    if case["strong_free"]:
        strong = [s for s in summary if s[2] in STRONG and s[0] != "interaction"]
        assert not strong, strong
    for finding in result.findings:
        assert 0 <= finding.confidence <= 1
        assert finding.message
        assert finding.recommendation
        assert finding.evidence
