"""Secrets from systemd credentials, key derivation, and tracing configuration."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.cli import main
from appliance.config import Settings
from appliance.keys import (
    MASTER_KEY,
    SecretError,
    derive_key,
    load_master_key,
    secret_path,
)
from appliance.observability import opentelemetry_config


def test_systemd_credentials_take_precedence(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    shutil.copy(settings.key_path / MASTER_KEY, creds / MASTER_KEY)
    (settings.key_path / MASTER_KEY).unlink()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert secret_path(settings, MASTER_KEY) == creds / MASTER_KEY
    assert len(load_master_key(settings)) == 32
    result = CliRunner().invoke(main, ["db", "check"])
    assert result.exit_code == 0, result.output
    rekey = CliRunner().invoke(main, ["db", "rekey"])
    assert rekey.exit_code == 1
    assert "systemd credential" in rekey.output


def test_malformed_master_key_is_refused(settings: Settings) -> None:
    (settings.key_path / MASTER_KEY).write_text("not-hex\n")
    with pytest.raises(SecretError, match="not hexadecimal"):
        load_master_key(settings)
    (settings.key_path / MASTER_KEY).write_text("ab" * 16 + "\n")
    with pytest.raises(SecretError, match="128 bits, expected 256"):
        load_master_key(settings)


def test_derived_keys_differ_per_purpose() -> None:
    master = bytes(range(32))
    assert derive_key(master, "domain-db") != derive_key(master, "audit-db")
    assert derive_key(master, "domain-db") == derive_key(master, "domain-db")
    assert len(derive_key(master, "x")) == 32


def test_tracing_off_by_default_and_on_when_enabled(settings: Settings) -> None:
    assert opentelemetry_config(settings) is None
    enabled = settings.model_copy(
        update={"tracing_enabled": True, "otlp_endpoint": "http://127.0.0.1:9/v1/traces"}
    )
    config = opentelemetry_config(enabled)
    assert config is not None
    app = create_app(enabled)
    with TestClient(app=app) as client:
        response: Any = client.get("/health/live")
        assert response.status_code == 200
