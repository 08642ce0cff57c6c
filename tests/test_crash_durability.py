"""``kill -9`` of the server during a burst of writes loses no acknowledged write.

A write is acknowledged when the client has its 2xx answer. SQLite in WAL mode with
``synchronous = FULL`` has made the transaction durable before the handler returns, and the
audit entry is appended (and committed) before the answer too; so after a crash every
acknowledged version must be in the domain store and every acknowledged write must have its
audit entry, both databases must pass their integrity checks, and the audit chain must verify.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from appliance.platform import load_token_service, open_platform
from services.workstations import store as repository
from tests.helpers_server import (
    free_port,
    log_tail,
    prepare_appliance,
    run_cli,
    settings_for,
    start_process,
    stop_process,
    wait_until_live,
    without_rate_limit,
)

WRITERS = 6
KILL_AFTER_ACKS = 300
BURST_TIMEOUT_S = 30.0


def _label(code: str, version: int) -> str:
    return f"Poste {code} v{version}"


class Burst:
    """Writer threads that create workstations and then update them, recording every 2xx."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[str, int] = {}  # code -> highest acknowledged version
        self.acked_actions: Counter[tuple[str, str]] = Counter()  # (code, action) -> count
        self.ack_count = 0
        self.unexpected: list[str] = []  # non-2xx answers before the kill
        self.enough = threading.Event()
        self.cut_off = 0  # writers whose request failed because the server was gone

    def _ack(self, code: str, version: int, action: str) -> None:
        with self.lock:
            self.acked[code] = max(self.acked.get(code, 0), version)
            self.acked_actions[(code, action)] += 1
            self.ack_count += 1
            if self.ack_count >= KILL_AFTER_ACKS:
                self.enough.set()

    def writer(self, number: int) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=10) as http:
            serial = 0
            while not self.stop.is_set():
                serial += 1
                code = f"w{number}-{serial}"
                try:
                    response = http.post(
                        "/api/workstations", json={"code": code, "label": _label(code, 1)}
                    )
                    if not self._record(response, code, "create"):
                        continue
                    # one or two new versions of each new workstation
                    for version in range(2, 2 + serial % 2 + 1):
                        response = http.put(
                            f"/api/workstations/{code}",
                            json={"expected_version": version - 1, "label": _label(code, version)},
                        )
                        if not self._record(response, code, "update"):
                            break
                except httpx.TransportError:
                    # the server is gone: the request in flight is not acknowledged
                    with self.lock:
                        self.cut_off += 1
                    return

    def _record(self, response: httpx.Response, code: str, action: str) -> bool:
        if response.is_success:
            self._ack(code, int(response.json()["version"]), action)
            return True
        if not self.stop.is_set():
            with self.lock:
                self.unexpected.append(f"{action} {code}: {response.status_code} {response.text}")
        return False


@pytest.mark.slow
def test_kill_9_during_write_burst_loses_no_acknowledged_write(tmp_path: Path) -> None:
    started = time.monotonic()
    env = prepare_appliance(
        tmp_path, HYGIE_EMBEDDED_WORKER="false", HYGIE_LOG_LEVEL="WARNING", **without_rate_limit()
    )
    settings = settings_for(env)
    token = load_token_service(settings).issue(
        subject="crash-test",
        role="pharmacien_titulaire",
        scopes=["workstations:read", "workstations:write"],
    )
    port = free_port()
    log_path = tmp_path / "server.log"
    proc = start_process(env, log_path, "serve", "--host", "127.0.0.1", "--port", str(port))
    burst = Burst(f"http://127.0.0.1:{port}", token)
    threads = [
        threading.Thread(target=burst.writer, args=(n,), daemon=True) for n in range(WRITERS)
    ]
    try:
        wait_until_live(burst.base_url, proc, log_path)
        for thread in threads:
            thread.start()
        reached = burst.enough.wait(timeout=BURST_TIMEOUT_S)
        assert proc.poll() is None, f"server died on its own:\n{log_tail(log_path)}"
        # the writers are still sending: kill the server in the middle of their requests
        os.kill(proc.pid, signal.SIGKILL)
        killed_at_acks = burst.ack_count
        for thread in threads:  # each writer stops on its own when its request fails
            thread.join(timeout=15)
    finally:
        burst.stop.set()
        stop_process(proc)
        for thread in threads:
            thread.join(timeout=15)
    assert proc.returncode == -signal.SIGKILL
    assert reached, f"only {burst.ack_count} writes acknowledged in {BURST_TIMEOUT_S} s"
    assert not any(thread.is_alive() for thread in threads)
    assert burst.cut_off == WRITERS, "every writer must have been cut off by the kill"
    assert burst.unexpected == [], burst.unexpected[:5]
    assert killed_at_acks >= KILL_AFTER_ACKS

    print(
        f"killed after {killed_at_acks} acknowledged writes "
        f"({len(burst.acked)} workstations, {burst.cut_off} requests cut off)"
    )

    # Every acknowledged write survived, with its version and content.
    platform = open_platform(settings)
    try:
        missing = []
        for code, version in sorted(burst.acked.items()):
            history = {item.version: item for item in repository.history(platform.store, code)}
            for acked_version in range(1, version + 1):
                item = history.get(acked_version)
                if item is None or item.entity.label != _label(code, acked_version):
                    missing.append(f"{code} v{acked_version}")
        assert missing == [], f"{len(missing)} acknowledged versions lost: {missing[:10]}"

        # ... and so did its audit entry, appended before the answer was sent.
        rows = platform.audit.store.db.execute(
            "SELECT object_id, action, count(*) FROM audit_entries "
            "WHERE object_type = 'workstation' AND outcome = 'success' "
            "GROUP BY object_id, action"
        ).fetchall()
        audited = {(code, action): count for code, action, count in rows}
        unaudited = [
            key for key, count in burst.acked_actions.items() if audited.get(key, 0) < count
        ]
        assert unaudited == [], f"acknowledged writes without audit entry: {unaudited[:10]}"
        assert platform.audit.count() >= burst.ack_count

        for store in (platform.store, platform.audit.store):
            assert store.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        platform.close()

    verify = run_cli(env, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit log OK" in verify.stdout
    check = run_cli(env, "db", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert time.monotonic() - started < 60
