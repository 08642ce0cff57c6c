"""Run real ``hygie`` processes (CLI, server, worker) against an isolated appliance.

Every process is started as ``python -m appliance.cli ...`` with the interpreter running the
tests and the repository root as working directory, so the same code works in CI's ``.venv``
and in any other virtual environment. Its environment is this process's environment without
any ``HYGIE_*`` variable, plus the isolated variables of :func:`tests.conftest.hygie_env`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from appliance.config import Settings, load_settings
from tests.conftest import hygie_env

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = (sys.executable, "-m", "appliance.cli")


def process_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a child process: no inherited ``HYGIE_*``, the isolated ones added."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("HYGIE_") and key != "CREDENTIALS_DIRECTORY"
    }
    env.update(hygie_env(tmp_path, **extra))
    env["PYTHONUNBUFFERED"] = "1"
    paths = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    config = Path(env["HYGIE_CONFIG_FILE"])
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("# test configuration\n")
    return env


def without_rate_limit() -> dict[str, str]:
    """Variables that switch the per-client rate limit off, where the settings have one.

    Load tests and fuzzers send more requests from one address than a counter ever would.
    """
    if "rate_limit_enabled" in Settings.model_fields:
        return {"HYGIE_RATE_LIMIT_ENABLED": "false"}
    return {}


def settings_for(env: dict[str, str]) -> Settings:
    """The settings the child processes see, for opening the same stores in the test."""
    return load_settings({key: value for key, value in env.items() if key.startswith("HYGIE_")})


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def prepare_appliance(tmp_path: Path, **extra: str) -> dict[str, str]:
    """``hygie keys init`` then ``hygie db migrate``; return the environment to reuse."""
    env = process_env(tmp_path, **extra)
    for args in (("keys", "init"), ("db", "migrate")):
        result = run_cli(env, *args)
        assert result.returncode == 0, f"hygie {' '.join(args)}: {result.stderr}{result.stdout}"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_process(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``hygie <args>`` with stdout and stderr in ``log_path`` (never a full pipe)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(  # the child keeps its own copy of the descriptor
            [*CLI, *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def log_tail(log_path: Path, chars: int = 3000) -> str:
    try:
        return log_path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log)"


def wait_until_live(
    base_url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 20
) -> None:
    """Poll ``/health/live`` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited with {proc.returncode} before answering:\n{log_tail(log_path)}"
            )
        try:
            if httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not live after {timeout} s:\n{log_tail(log_path)}")


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, timeout: float = 10
) -> int:
    """Send ``sig`` to a process this test started (if still running) and reap it."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=timeout)


@contextmanager
def running_server(
    env: dict[str, str], log_path: Path, *, port: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``hygie serve`` on 127.0.0.1 (without embedded worker); killed on exit, whatever happens."""
    env = {**env, "HYGIE_EMBEDDED_WORKER": "false"}
    port = port or free_port()
    proc = start_process(env, log_path, "serve", "--host", "127.0.0.1", "--port", str(port))
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_live(base_url, proc, log_path)
        yield proc, base_url
    finally:
        stop_process(proc)
