"""Clinical vignettes (tests/fixtures/vignettes/*.json): each FHIR Bundle with the findings
the engine must and must not raise. Built by tests/fixtures/vignettes/build.py."""

from __future__ import annotations

import json
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


def _has(findings: list[Any], kind: str, text: str) -> bool:
    return any(f.kind == kind and text in f.rule for f in findings)


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
