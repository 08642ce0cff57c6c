"""The real huey worker process, and readiness as it depends on the worker and the key."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.config import Settings
from appliance.keys import MASTER_KEY, new_master_key_text, write_secret
from appliance.platform import open_platform
from appliance.tasks import last_heartbeat
from tests.helpers_server import (
    log_tail,
    prepare_appliance,
    process_env,
    run_cli,
    settings_for,
    start_process,
    stop_process,
)

PROBLEM = "application/problem+json"
HEARTBEAT_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


def _ready(settings: Settings) -> Any:
    """``GET /health/ready`` of a fresh in-process app (no fake heartbeat recorded)."""
    app = create_app(settings)
    with TestClient(app=app) as client:
        return client.get("/health/ready")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_worker_beats_makes_the_app_ready_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    env = prepare_appliance(tmp_path)
    settings = settings_for(env)
    log_path = tmp_path / "worker.log"
    worker = start_process(env, log_path, "worker")
    try:
        platform = open_platform(settings)
        try:
            deadline = time.monotonic() + HEARTBEAT_TIMEOUT_S
            beat = last_heartbeat(platform.store)
            while beat is None and time.monotonic() < deadline:
                assert worker.poll() is None, f"worker exited:\n{log_tail(log_path)}"
                time.sleep(0.1)
                beat = last_heartbeat(platform.store)
        finally:
            platform.close()
        assert beat is not None, f"no heartbeat in {HEARTBEAT_TIMEOUT_S} s:\n{log_tail(log_path)}"

        response = _ready(settings)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready"
        assert body["checks"], body
        assert all(check["ok"] for check in body["checks"].values()), body
        assert {"store", "worker"} <= set(body["checks"])

        worker.send_signal(signal.SIGINT)
        returncode = worker.wait(timeout=STOP_TIMEOUT_S)
    finally:
        stop_process(worker)
    assert returncode == 0, log_tail(log_path)
    assert "Traceback" not in log_tail(log_path, 20_000)


def test_ready_is_503_naming_the_worker_without_heartbeat(settings: Settings) -> None:
    response = _ready(settings)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 503  # the RFC 9457 member
    worker = body["checks"]["worker"]
    assert worker["ok"] is False
    assert "worker" in worker["reason"]
    assert body["checks"]["store"]["ok"] is True
    assert "worker" in body["detail"]


def _replace_master_key(settings: Settings) -> None:
    """Another valid key in place of the right one (a restored backup of the wrong box)."""
    write_secret(settings.key_path / MASTER_KEY, new_master_key_text())


def test_ready_is_503_naming_the_store_with_a_wrong_key_and_leaves_it_untouched(
    settings: Settings,
) -> None:
    databases = [settings.domain_db_path, settings.audit_db_path]
    before = {path: _sha256(path) for path in databases}
    _replace_master_key(settings)

    response = _ready(settings)

    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    store = body["checks"]["store"]
    assert store["ok"] is False
    assert "key" in store["reason"]
    assert "store" in body["detail"]
    assert {path: _sha256(path) for path in databases} == before
    leftovers = sorted(p.name for p in settings.data_path.iterdir() if p.suffix != ".db")
    assert not [name for name in leftovers if name.endswith(("-wal", "-shm", "-journal"))]


def test_worker_with_a_wrong_key_exits_4_with_one_line(tmp_path: Path) -> None:
    env = prepare_appliance(tmp_path)
    settings = settings_for(env)
    before = _sha256(settings.domain_db_path)
    _replace_master_key(settings)

    result = run_cli(env, "worker", timeout=STOP_TIMEOUT_S)

    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hygie: ")
    assert "key" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert _sha256(settings.domain_db_path) == before


def test_worker_needs_a_migrated_store(tmp_path: Path) -> None:
    """Without ``hygie db migrate`` the worker refuses to start instead of creating files."""
    env = process_env(tmp_path)
    assert run_cli(env, "keys", "init").returncode == 0

    result = run_cli(env, "worker", timeout=STOP_TIMEOUT_S)

    assert result.returncode == 4, result.stderr
    assert "hygie db migrate" in result.stderr
    assert "Traceback" not in result.stderr
    assert not settings_for(env).domain_db_path.exists()
