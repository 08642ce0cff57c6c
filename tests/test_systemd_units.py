"""The production systemd units: `systemd-analyze verify` and the hardening they promise.

`systemd-analyze verify` exits 0 even when it ignores an unknown or malformed directive
(it only prints `file:line: Unknown key ..., ignoring.`), so the tests also fail on any
stderr line that names one of our unit files. They tolerate stderr lines that do not name
our files: those come from the host (other units pulled in by dependencies, or a
container without systemd as PID 1) and say nothing about our units.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT_DIR = ROOT / "systemd"
UNITS = ("hygie.service", "hygie-worker.service")
PLACEHOLDER = "/opt/hygie/.venv/bin/hygie"
CRED_DIR = "/etc/hygie/credentials"

# Hardening directives both units must carry, with their exact value.
HARDENING = {
    "User": "hygie",
    "ProtectSystem": "strict",
    "ReadWritePaths": "/var/lib/hygie",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
    "Restart": "on-failure",
}


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections -> ordered (key, value) pairs; keys may repeat, as in systemd."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def load(unit: str) -> dict[str, list[tuple[str, str]]]:
    return parse_unit((UNIT_DIR / unit).read_text(encoding="utf-8"))


def hygie_executable() -> Path:
    """The `hygie` console script of the venv running the tests."""
    candidate = Path(sys.executable).parent / "hygie"
    if candidate.is_file():
        return candidate
    found = shutil.which("hygie")
    if found is None:
        pytest.fail("no `hygie` console script: run ./install.sh --dev first")
    return Path(found)


def credentials_dropin(mode: str, unit: str) -> str:
    """The drop-in install.sh --prod generates (its own function, sourced)."""
    script = 'source ./install.sh && credentials_dropin "$1" "$2"'
    out = subprocess.run(
        ["bash", "-c", script, "bash", mode, str(UNIT_DIR / unit)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return out.stdout


def verify(paths: list[Path], cwd: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    # --man=no: do not look up man pages (none installed in containers).
    # --recursive-errors=no: judge our units, not the host's units they are ordered after.
    proc = subprocess.run(
        [analyze, "verify", "--man=no", "--recursive-errors=no", *map(str, paths)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    ours = re.compile("|".join(re.escape(p.name) for p in paths) + "|" + re.escape(str(cwd)))
    complaints = [line for line in proc.stderr.splitlines() if ours.search(line)]
    assert proc.returncode == 0, proc.stderr
    assert complaints == [], "\n".join(complaints)
    # Belt and braces: the parser warnings systemd emits for bad directives.
    assert not re.search(r"Unknown (key|section|lvalue)|Failed to parse|Missing '='", proc.stderr)


def install_units(tmp_path: Path) -> list[Path]:
    hygie = str(hygie_executable())
    paths = []
    for unit in UNITS:
        text = (UNIT_DIR / unit).read_text(encoding="utf-8")
        assert PLACEHOLDER in text
        path = tmp_path / unit
        path.write_text(text.replace(PLACEHOLDER, hygie), encoding="utf-8")
        paths.append(path)
    return paths


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    verify(install_units(tmp_path), tmp_path)


@pytest.mark.parametrize("mode", ["encrypted", "plain"])
def test_units_with_credentials_dropin_pass_verify(tmp_path: Path, mode: str) -> None:
    paths = install_units(tmp_path)
    for path in paths:
        dropin = tmp_path / f"{path.name}.d" / "credentials.conf"
        dropin.parent.mkdir()
        dropin.write_text(credentials_dropin(mode, path.name), encoding="utf-8")
    verify(paths, tmp_path)


@pytest.mark.parametrize("unit", UNITS)
def test_unit_hardening(unit: str) -> None:
    service = load(unit)["Service"]
    for key, expected in HARDENING.items():
        assert values(service, key) == [expected], f"{unit}: {key}={expected} expected"
    assert "HYGIE_ENV=prod" in " ".join(values(service, "Environment"))
    # Data goes to /var/lib/hygie through ReadWritePaths, not a StateDirectory=.
    assert values(service, "StateDirectory") == []
    assert values(service, "DynamicUser") == []


@pytest.mark.parametrize("unit", UNITS)
def test_unit_credentials_stay_out_of_the_data_dir(unit: str) -> None:
    service = load(unit)["Service"]
    creds = values(service, "LoadCredential")
    assert creds, f"{unit} loads no credential"
    for entry in creds:
        name, _, path = entry.partition(":")
        assert path == f"{CRED_DIR}/{name}", entry
    writable = " ".join(values(service, "ReadWritePaths"))
    assert "/etc" not in writable


def test_server_and_worker_commands() -> None:
    server = load("hygie.service")
    worker = load("hygie-worker.service")
    assert values(server["Service"], "ExecStart") == [f"{PLACEHOLDER} serve"]
    assert values(worker["Service"], "ExecStart") == [f"{PLACEHOLDER} worker"]
    assert "network-online.target" in " ".join(values(server["Unit"], "After"))
    server_creds = {v.split(":")[0] for v in values(server["Service"], "LoadCredential")}
    worker_creds = {v.split(":")[0] for v in values(worker["Service"], "LoadCredential")}
    assert server_creds == {
        "master.key",
        "audit-signing.pem",
        "jwt-signing.json",
        "field.key",
        "tls-server.key",
        "tls-server.pem",
        "tls-ca.pem",
    }
    environment = values(server["Service"], "Environment")
    assert "HYGIE_HOST=0.0.0.0" in environment
    assert "HYGIE_PORT=8000" in environment
    # Least privilege: the worker never signs JWTs.
    assert worker_creds == {"master.key", "audit-signing.pem", "field.key"}


@pytest.mark.parametrize("unit", UNITS)
def test_credentials_dropin_content(unit: str) -> None:
    names = [v.split(":")[0] for v in values(load(unit)["Service"], "LoadCredential")]
    encrypted = parse_unit(credentials_dropin("encrypted", unit))["Service"]
    plain = parse_unit(credentials_dropin("plain", unit))["Service"]
    # Both start by clearing the unit's LoadCredential= baseline.
    assert encrypted[0] == ("LoadCredential", "")
    assert plain[0] == ("LoadCredential", "")
    assert values(encrypted, "LoadCredentialEncrypted") == [
        f"{n}:{CRED_DIR}/{n}.cred" for n in names
    ]
    assert values(encrypted, "LoadCredential") == [""]
    assert values(plain, "LoadCredential") == ["", *(f"{n}:{CRED_DIR}/{n}" for n in names)]
    assert values(plain, "LoadCredentialEncrypted") == []


def test_verify_catches_a_bad_directive(tmp_path: Path) -> None:
    """The check above must fail on a typo, although systemd-analyze exits 0 for it."""
    paths = install_units(tmp_path)
    text = paths[0].read_text(encoding="utf-8")
    paths[0].write_text(text.replace("ProtectHome=yes", "ProtectHome=yes\nProtectHoem=yes"))
    with pytest.raises(AssertionError, match="Unknown key"):
        verify(paths, tmp_path)
