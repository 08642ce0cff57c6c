"""install.sh, .ci/run and the README commands they implement."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "install.sh"
CI_RUN = ROOT / ".ci" / "run"
SERVE_COMMAND = "./install.sh --dev && .venv/bin/hygie serve"
TEST_COMMAND = "./install.sh --dev && .venv/bin/pytest"


def clean_env() -> dict[str, str]:
    """The caller's environment without Hygie settings, credentials or coverage hooks."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HYGIE_", "COV_CORE_", "COVERAGE_")) and k != "CREDENTIALS_DIRECTORY"
    }


def run_install(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTALL), *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("script", [INSTALL, CI_RUN], ids=["install.sh", ".ci/run"])
def test_script_syntax_and_mode(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    assert script.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    proc = subprocess.run(
        [shellcheck, "--shell=bash", str(INSTALL), str(CI_RUN)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_runs_exactly_the_readme_test_command() -> None:
    lines = [
        line.strip()
        for line in CI_RUN.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "set -euo pipefail" in lines
    assert lines[-1] == TEST_COMMAND


def test_readme_opens_with_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", readme, flags=re.DOTALL)
    assert [b.strip() for b in blocks[:2]] == [SERVE_COMMAND, TEST_COMMAND]
    # Nothing but blank lines between the two commands.
    between = readme.split(SERVE_COMMAND, 1)[1].split(TEST_COMMAND, 1)[0]
    assert between.replace("```sh", "").replace("```", "").strip() == ""


def test_usage() -> None:
    help_run = run_install("--help", timeout=10)
    assert help_run.returncode == 0
    assert "--prod" in help_run.stdout
    bad = run_install("--bogus", timeout=10)
    assert bad.returncode == 2
    assert "Usage" in bad.stderr


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    return {
        p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@pytest.mark.slow
def test_second_dev_run_is_fast_and_changes_nothing() -> None:
    stamp = ROOT / ".venv" / ".hygie-install-stamp"
    if not stamp.is_file():
        pytest.skip("this checkout was not installed by ./install.sh --dev")
    # Fail before running install.sh if the checkout changed since it last ran (it would
    # reinstall into the venv running this very test).
    current = subprocess.run(
        ["bash", "-c", "source ./install.sh && stamp_value"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert current == stamp.read_text(encoding="utf-8"), (
        "pyproject.toml or the package folders changed since ./install.sh --dev ran: re-run it"
    )
    keys = ROOT / "var" / "keys"
    assert keys.is_dir(), "./install.sh --dev should have created var/keys"
    keys_before = snapshot(keys)
    assert {"master.key", "audit-signing.pem", "jwt-signing.json"} <= keys_before.keys()
    stamp_before = stamp.read_bytes()

    start = time.monotonic()
    proc = run_install("--dev", timeout=300)
    elapsed = time.monotonic() - start

    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "pip: skipped" in proc.stdout, output
    assert "apt: all Debian packages present" in proc.stdout, output
    assert "venv: creating" not in proc.stdout
    assert elapsed < 60, f"second run took {elapsed:.1f}s\n{output}"
    assert snapshot(keys) == keys_before
    assert stamp.read_bytes() == stamp_before
