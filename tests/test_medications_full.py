"""The full BDPM of July 2025 through ``hygie catalog import`` (slow: about 5 s here)."""

from __future__ import annotations

import os
import subprocess
import sys
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


THESAURUS = ROOT.parent / "shared" / "data" / "ansm-thesaurus-2019-09"


@pytest.mark.slow
@pytest.mark.skipif(not THESAURUS.exists(), reason="shared ANSM PDFs not available")
def test_thesaurus_import_regenerates_the_bundled_knowledge(
    env: dict[str, str], platform: Platform, tmp_path: Path
) -> None:
    """The importer run on the official PDFs gives the pairs and levels of the bundled file."""
    from services.medications import current_thesaurus
    from services.medications.thesaurus import bundled_path, decode

    runner = CliRunner()
    refused = runner.invoke(
        main,
        [
            "interactions",
            "import",
            str(THESAURUS / "Thesaurus_09_2019.pdf"),
            "--classes",
            str(THESAURUS / "index_classes_09_2019.pdf"),
        ],
    )
    assert refused.exit_code == 1
    assert "import the BDPM catalog first" in refused.output
    assert runner.invoke(main, ["catalog", "import", str(BDPM)]).exit_code == 0
    output = tmp_path / "thesaurus.json"
    # A subprocess, not CliRunner: coverage tracing would make the PDF parsing several
    # times slower, and this is the one test that parses the whole 249-page thesaurus.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "interactions",
            "import",
            str(THESAURUS / "Thesaurus_09_2019.pdf"),
            "--classes",
            str(THESAURUS / "index_classes_09_2019.pdf"),
            "--substances",
            str(THESAURUS / "index_des_substances_09_2019.pdf"),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        # pytest-cov passes COV_CORE_* to children to trace them too: not this one.
        env={k: v for k, v in os.environ.items() if not k.startswith("COV_CORE")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1531 pairs" in result.stdout
    fresh = decode(output.read_bytes())
    bundled = decode(bundled_path().read_bytes())
    assert {(i.a, i.b, i.level) for i in fresh.interactions} == {
        (i.a, i.b, i.level) for i in bundled.interactions
    }
    assert current_thesaurus(platform.store).edition == "2019-09"
    last = platform.audit.entries()[-1]
    assert (last.object_type, last.outcome) == ("thesaurus", "success")
