"""``hygie audit verify`` catches each kind of tampering an attacker with the key could do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from appliance.audit import AuditEvent
from appliance.cli import main
from appliance.commands import EXIT_FAILURE
from appliance.config import Settings
from appliance.keys import load_master_key
from appliance.platform import Platform, audit_key
from appliance.store.sqlcipher import open_connection


def _fill(platform: Platform, count: int) -> None:
    for i in range(count):
        platform.audit.record(
            AuditEvent(
                actor=f"user:{i % 3}",
                role="pharmacien_adjoint",
                action="read",
                object_type="patient",
                object_id=f"p-{i}",
                purpose="care",
                client_addr="192.168.1.20",
                outcome="success",
            )
        )
    platform.audit.checkpoint()


def _tamper(settings: Settings, *statements: str) -> None:
    conn = open_connection(settings.audit_db_path, audit_key(load_master_key(settings)))
    try:
        for name in ("audit_entries_no_update", "audit_entries_no_delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        conn.execute("BEGIN")
        for statement in statements:
            conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _columns(settings: Settings) -> list[str]:
    conn = open_connection(settings.audit_db_path, audit_key(load_master_key(settings)))
    try:
        return [row[1] for row in conn.execute("PRAGMA table_info(audit_entries)")]
    finally:
        conn.close()


def _swap(settings: Settings, a: int, b: int) -> list[str]:
    cols = [c for c in _columns(settings) if c != "seq"]
    sets_a = ", ".join(f"{c} = (SELECT {c} FROM tmp WHERE seq = {b})" for c in cols)
    sets_b = ", ".join(f"{c} = (SELECT {c} FROM tmp WHERE seq = {a})" for c in cols)
    return [
        "CREATE TEMP TABLE tmp AS SELECT * FROM audit_entries",
        f"UPDATE audit_entries SET {sets_a} WHERE seq = {a}",
        f"UPDATE audit_entries SET {sets_b} WHERE seq = {b}",
    ]


TAMPERS: dict[str, Callable[[Settings], list[str]]] = {
    "change": lambda s: ["UPDATE audit_entries SET object_id = 'p-999' WHERE seq = 42"],
    "delete": lambda s: ["DELETE FROM audit_entries WHERE seq = 42"],
    "reorder": lambda s: _swap(s, 42, 43),
}
EXPECTED = {"change": "ALTERED", "delete": "REMOVED", "reorder": "REORDERED"}


def test_clean_log_verifies(settings: Settings, platform: Platform) -> None:
    _fill(platform, 120)
    result = CliRunner().invoke(main, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    assert "120 entries" in result.output


@pytest.mark.parametrize("kind", list(TAMPERS))
def test_tampering_is_reported_with_the_first_bad_entry(
    settings: Settings, platform: Platform, kind: str
) -> None:
    _fill(platform, 120)
    _tamper(settings, *TAMPERS[kind](settings))
    result = CliRunner().invoke(main, ["audit", "verify"])
    assert result.exit_code == EXIT_FAILURE, result.output
    assert EXPECTED[kind] in result.output.upper()
    assert "42" in result.output


def test_audit_holds_ids_not_names(client: Any, auth: dict[str, str], platform: Platform) -> None:
    response = client.post(
        "/api/workstations",
        json={"code": "comptoir-2", "label": "Comptoir de Mme Dupont"},
        headers=auth,
    )
    assert response.status_code == 201
    entries = platform.audit.entries()
    assert entries[-1].object_id == "comptoir-2"
    assert entries[-1].action == "create"
    assert "Dupont" not in repr(entries)
    assert auth["Authorization"].split()[1] not in repr(entries)
