"""Shared fixtures: a fresh appliance (keys, migrated encrypted databases) per test.

Like sqlite-utils' fresh-database fixture, every test gets its own data and key directories
under ``tmp_path``, so tests never share state and never touch ``./var``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from appliance.cli import main
from appliance.config import Settings, load_settings
from appliance.platform import Platform, open_platform
from appliance.security import TokenService
from appliance.tasks import record_heartbeat
from services.identity.roles import ALL_SCOPES, role_scopes

__all__ = ["ALL_SCOPES", "hygie_env"]  # ALL_SCOPES: every scope of the role table's catalogue


def hygie_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment variables for an isolated appliance under ``tmp_path``."""
    env = {
        "HYGIE_ENV": "dev",
        "HYGIE_CONFIG_FILE": str(tmp_path / "hygie.toml"),
        "HYGIE_DATA_DIR": str(tmp_path / "data"),
        "HYGIE_KEY_DIR": str(tmp_path / "keys"),
        "HYGIE_MIN_FREE_DISK_MB": "1",
        "HYGIE_LOG_JSON": "true",
        # Cheap password hashing and no rate limiting unless a test asks for them.
        "HYGIE_ARGON2_TIME_COST": "1",
        "HYGIE_ARGON2_MEMORY_KIB": "1024",
        "HYGIE_ARGON2_PARALLELISM": "1",
        "HYGIE_RATE_LIMIT_PER_CLIENT": "1000000",
        "HYGIE_RATE_LIMIT_AUTH_PER_CLIENT": "1000000",
    }
    env.update(extra)
    return env


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """HYGIE_* variables set in this process for a fresh, keyed and migrated appliance."""
    for key in list(os.environ):
        if key.startswith("HYGIE_") or key == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(key)
    values = hygie_env(tmp_path)
    (tmp_path / "hygie.toml").write_text("# test configuration\n")
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    for args in (["keys", "init"], ["db", "migrate"]):
        result = runner.invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return values


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings()


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    opened = open_platform(settings)
    yield opened
    opened.close()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:  # type: ignore[type-arg]
    from appliance.app import create_app

    app = create_app(settings)
    with TestClient(app=app) as test_client:
        record_heartbeat(app.state.platform.store, "test-worker")
        yield test_client


@pytest.fixture
def token_for(platform: Platform) -> Callable[..., str]:
    def make(*scopes: str, subject: str = "user-test", role: str = "pharmacien_titulaire") -> str:
        assert platform.tokens is not None
        return platform.tokens.issue(subject=subject, role=role, scopes=scopes or ALL_SCOPES)

    return make


@pytest.fixture
def role_token(platform: Platform) -> Callable[..., str]:
    """An access token carrying exactly the scopes of ``role`` in the role table."""

    def make(role: str, *, subject: str = "user-test") -> str:
        assert platform.tokens is not None
        return platform.tokens.issue(subject=subject, role=role, scopes=role_scopes(role))

    return make


@pytest.fixture
def auth(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for()}"}


@pytest.fixture
def tokens(platform: Platform) -> TokenService:
    assert platform.tokens is not None
    return platform.tokens
