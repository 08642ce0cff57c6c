"""The full BDPM of July 2025 through ``hygie catalog import`` (slow: about 5 s here)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import main
from appliance.platform import Platform
from services.medications import interactions_for_specialities
from services.medications import store as repository

ROOT = Path(__file__).resolve().parent.parent
BDPM = ROOT.parent / "shared" / "data" / "bdpm-2025-07"


@pytest.mark.slow
@pytest.mark.skipif(not BDPM.exists(), reason="shared BDPM files not available")
def test_full_bdpm_import(env: dict[str, str], platform: Platform) -> None:
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["catalog", "import", str(BDPM)])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert elapsed < 30, f"import took {elapsed:.1f} s (goal 30 s)"
    counts = repository.table_counts(platform.store)
    assert counts["med_specialities"] > 15_000
    assert counts["med_presentations"] > 20_000
    assert "ATC coverage: marketed specialities" in result.output
    doliprane = repository.search(platform.store, "3400935955838")[0]
    assert (doliprane.name, doliprane.atc) == ("DOLIPRANE 1000 mg, comprimé", "N02BE01")
    assert repository.search(platform.store, "amoxicilline", limit=5)
    # warfarin (COUMADINE) + aspirin (KARDEGIC): contraindicated at some doses
    found = interactions_for_specialities(platform.store, ["63245753", "64755969"])
    assert found[0].level == "contre-indication"
