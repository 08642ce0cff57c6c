"""Settings: TOML file, environment overrides, and start-up refusal on bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import main
from appliance.commands import EXIT_CONFIG
from appliance.config import ConfigError, Environment, load_settings, settings_for_display


def test_defaults_in_dev_keep_everything_under_var() -> None:
    settings = load_settings({})
    assert settings.env is Environment.DEV
    assert settings.data_path == Path("var")
    assert settings.key_path == Path("var/keys")
    assert settings.port == 8000
    assert settings.host == "127.0.0.1"
    assert settings.runs_embedded_worker


def test_production_defaults_use_fhs_paths_and_no_embedded_worker() -> None:
    settings = load_settings({"HYGIE_ENV": "prod"})
    assert settings.data_path == Path("/var/lib/hygie")
    assert settings.key_path == Path("/etc/hygie/credentials")
    assert not settings.runs_embedded_worker


def test_toml_values_apply_and_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "hygie.toml"
    path.write_text('port = 9000\nhost = "0.0.0.0"\nmax_body_bytes = 4096\n')
    settings = load_settings({"HYGIE_CONFIG_FILE": str(path), "HYGIE_PORT": "9100"})
    assert settings.port == 9100
    assert settings.host == "0.0.0.0"
    assert settings.max_body_bytes == 4096
    assert settings.config_file == path


def test_invalid_value_names_the_key_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "hygie.toml"
    path.write_text("port = 70000\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"HYGIE_CONFIG_FILE": str(path)})
    message = str(excinfo.value)
    assert "port" in message
    assert str(path) in message
    assert "less than or equal to 65535" in message


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"HYGIE_PORTT.*unknown setting"):
        load_settings({"HYGIE_PORTT": "1"})


def test_malformed_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hygie.toml"
    path.write_text("port = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"HYGIE_CONFIG_FILE": str(path)})


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"HYGIE_CONFIG_FILE": str(tmp_path / "missing.toml")})


def test_secrets_are_masked_for_display() -> None:
    settings = load_settings({"HYGIE_OTLP_HEADERS": "authorization=Bearer s3cr3t"})
    shown = settings_for_display(settings)
    assert shown["otlp_headers"] == "********"
    assert "s3cr3t" not in repr(shown)


def test_cli_stops_on_invalid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYGIE_PORT", "not-a-port")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == EXIT_CONFIG
    assert "port (HYGIE_PORT)" in result.output
    assert "Traceback" not in result.output


def test_cli_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYGIE_OTLP_HEADERS", "authorization=Bearer s3cr3t")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0
    assert "s3cr3t" not in result.output
    assert '"otlp_headers": "********"' in result.output
