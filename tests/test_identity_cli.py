"""``hygie users``, ``hygie clients`` and ``hygie tokens``: the first administrator is created
from the terminal or a file descriptor, never from a command-line argument."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from litestar.testing import TestClient

from appliance.cli import main
from appliance.config import Settings
from appliance.keys import JWT_SIGNING_KEYS
from tests.identity_support import PASSWORD, audit_actions, login, rpps

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input)


def with_fd(text: str, *args: str) -> Any:
    read, write = os.pipe()
    os.write(write, text.encode())
    os.close(write)
    try:
        return run(*args, "--password-fd", str(read))
    finally:
        os.close(read)


def test_create_admin_from_a_file_descriptor_then_log_in(
    settings: Settings, client: TestClient[Any]
) -> None:
    result = with_fd(PASSWORD + "\n", "users", "create-admin")
    assert result.exit_code == 0, result.output
    assert "created admin_technique 'admin'" in result.output
    assert PASSWORD not in result.output
    tokens = login(client, "admin")
    assert "admin:*" in tokens["scope"]
    assert "patients:read" not in tokens["scope"]


def test_create_admin_interactively_with_confirmation(env: dict[str, str]) -> None:
    result = run("users", "create-admin", "--username", "it", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    mismatch = run("users", "create-admin", "--username", "it2", input=f"{PASSWORD}\nautre\n")
    assert mismatch.exit_code != 0
    assert "it2" not in run("users", "list").output


def test_the_password_is_never_an_argument(env: dict[str, str]) -> None:
    result = run("users", "create-admin", "--password", PASSWORD)
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_policy_and_rpps_rules_apply(env: dict[str, str]) -> None:
    weak = with_fd("faible\n", "users", "create-admin")
    assert weak.exit_code == 1
    assert "policy" in weak.output
    no_rpps = with_fd(PASSWORD, "users", "create-admin", "--role", "pharmacien_titulaire")
    assert no_rpps.exit_code == 1
    assert "RPPS" in no_rpps.output
    bad_rpps = with_fd(
        PASSWORD, "users", "create-admin", "--role", "pharmacien_titulaire", "--rpps", "1234"
    )
    assert bad_rpps.exit_code == 2
    ok = with_fd(
        PASSWORD,
        "users",
        "create-admin",
        "--username",
        "titulaire",
        "--role",
        "pharmacien_titulaire",
        "--rpps",
        rpps(11),
    )
    assert ok.exit_code == 0, ok.output
    empty = with_fd("", "users", "create-admin", "--username", "x2")
    assert empty.exit_code == 2
    bad_fd = run("users", "create-admin", "--password-fd", "987")
    assert bad_fd.exit_code == 2


def test_account_commands(env: dict[str, str], settings: Settings) -> None:
    assert with_fd(PASSWORD, "users", "create-admin").exit_code == 0
    created = with_fd(
        PASSWORD,
        "users",
        "create",
        "--username",
        "lucie",
        "--display-name",
        "Lucie Bernard",
        "--role",
        "preparateur",
    )
    assert created.exit_code == 0, created.output
    rows = [json.loads(line) for line in run("users", "list", "--json").output.splitlines()]
    assert {row["username"]: row["role"] for row in rows} == {
        "admin": "admin_technique",
        "lucie": "preparateur",
    }
    promoted = run("users", "set-role", "lucie", "pharmacien_adjoint", "--rpps", rpps(12))
    assert promoted.exit_code == 0, promoted.output
    assert "pharmacien_adjoint" in promoted.output
    assert run("users", "suspend", "lucie").exit_code == 0
    assert "suspended" in run("users", "list").output
    assert run("users", "activate", "lucie").exit_code == 0
    assert run("users", "unlock", "lucie").exit_code == 0
    assert "0 session" in run("users", "revoke-sessions", "lucie").output
    assert with_fd("Autre-Passe-2024!", "users", "set-password", "lucie").exit_code == 0
    missing = run("users", "suspend", "personne")
    assert missing.exit_code == 1
    assert "no user" in missing.output


def test_clients_and_key_rotation(env: dict[str, str], settings: Settings) -> None:
    created = run(
        "clients", "create", "--client-id", "lgo-sync", "--name", "LGO", "--scope", "patients:read"
    )
    assert created.exit_code == 0, created.output
    secret_line = next(line for line in created.output.splitlines() if "client_secret" in line)
    secret = secret_line.split(":", 1)[1].strip()
    assert len(secret) >= 40
    listed = run("clients", "list")
    assert "lgo-sync" in listed.output
    assert secret not in listed.output
    duplicate = run("clients", "create", "--client-id", "lgo-sync", "--name", "LGO")
    assert duplicate.exit_code == 1
    bad = run("clients", "create", "--client-id", "BAD ID", "--name", "x")
    assert bad.exit_code == 2

    before = json.loads((settings.key_path / JWT_SIGNING_KEYS).read_bytes())["keys"]
    rotated = run("tokens", "rotate-key")
    assert rotated.exit_code == 0, rotated.output
    after = json.loads((settings.key_path / JWT_SIGNING_KEYS).read_bytes())["keys"]
    assert len(after) == len(before) + 1
    assert after[-1]["kid"] in rotated.output


def test_create_admin_reads_a_real_inherited_descriptor(
    tmp_path: Path, env: dict[str, str]
) -> None:
    read, write = os.pipe()
    os.write(write, f"{PASSWORD}\n".encode())
    os.close(write)
    child_env = {k: v for k, v in os.environ.items()}
    child_env["PYTHONPATH"] = str(ROOT)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance.cli",
                "users",
                "create-admin",
                "--password-fd",
                str(read),
            ],
            pass_fds=(read,),
            env=child_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(read)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_cli_changes_are_audited(env: dict[str, str], settings: Settings) -> None:
    from appliance.platform import open_platform

    assert with_fd(PASSWORD, "users", "create-admin").exit_code == 0
    platform = open_platform(settings)
    try:
        actions = audit_actions(platform)
    finally:
        platform.close()
    assert any(action == "user_create" for action, _, _ in actions)
    assert any(
        action == "role_change" and outcome == "admin_technique" for action, _, outcome in actions
    )
