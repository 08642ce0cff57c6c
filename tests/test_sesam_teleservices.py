"""The teleservice client over real HTTP on loopback: answers of the LOCAL SIMULATOR,
teleservice down (check queued, record unchecked, re-run later), 5xx retried, circuit
breaker opening."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.platform import Platform
from appliance.resilience import Breakers, RetryPolicy
from services.patients import patient_crypto, save_patient
from services.patients.models import Amo, Coverage, Identity, Patient
from services.sesam_vitale import (
    TeleserviceClient,
    TeleserviceUnavailable,
    check_message,
    checks_of,
    rerun_unchecked,
    run_check,
)
from services.sesam_vitale.simulator import DEMO_DATA, Simulator, SimulatorServer

FAST = RetryPolicy(attempts=2, initial_wait_s=0.01, max_wait_s=0.02)


def client_for(url: str | None, breakers: Breakers | None = None) -> TeleserviceClient:
    return TeleserviceClient(
        adri_url=url,
        insi_url=url,
        transmission_url=url,
        timeout_s=2.0,
        retry=FAST,
        breakers=breakers or Breakers(threshold=50, ttl_s=60),
    )


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    server = SimulatorServer(Simulator(DEMO_DATA)).start()
    yield server
    server.stop()


def test_simulator_answers_rights_and_identity(simulator: SimulatorServer) -> None:
    client = client_for(simulator.url)
    jeanne = DEMO_DATA.beneficiaries[0]
    rights = asyncio.run(client.rights(jeanne.nir, jeanne.birth_date))
    assert (rights.status, rights.regime, rights.ald) == ("found", "01", True)
    assert asyncio.run(client.rights(jeanne.nir, date(1900, 1, 1))).status == "not_found"
    by_traits = asyncio.run(
        client.identity(
            {
                "birth_family_name": "Martin",
                "given_names": "Jeanne",
                "birth_date": "1948-02-14",
                "sex": "F",
            }
        )
    )
    assert (by_traits.status, by_traits.matricule) == ("found", jeanne.nir)
    assert asyncio.run(client.identity({"nir": "100000000000000"})).status == "not_found"


def test_unconfigured_or_down_teleservice_is_unavailable() -> None:
    with pytest.raises(TeleserviceUnavailable, match="no URL"):
        asyncio.run(client_for(None).rights("248027512345642", date(1948, 2, 14)))
    with pytest.raises(TeleserviceUnavailable, match="ConnectError"):
        asyncio.run(client_for(closed_port_url()).rights("248027512345642", date(1948, 2, 14)))


class _Failing(BaseHTTPRequestHandler):
    calls = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        type(self).calls += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_5xx_is_retried_then_the_circuit_opens() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = client_for(url, Breakers(threshold=3, ttl_s=60))
        with pytest.raises(TeleserviceUnavailable, match="_ServerError"):
            asyncio.run(client.rights("248027512345642", date(1948, 2, 14)))
        assert _Failing.calls == 2  # the retry policy's two attempts
        with pytest.raises(TeleserviceUnavailable):
            asyncio.run(client.rights("248027512345642", date(1948, 2, 14)))
        calls = _Failing.calls
        with pytest.raises(TeleserviceUnavailable, match="circuit open"):
            asyncio.run(client.rights("248027512345642", date(1948, 2, 14)))
        assert _Failing.calls == calls  # open circuit: the server is not even called
    finally:
        server.shutdown()
        server.server_close()


def test_teleservice_down_queues_the_check_and_marks_it_unchecked(
    platform: Platform, simulator: SimulatorServer
) -> None:
    crypto = patient_crypto(platform.settings)
    jeanne = DEMO_DATA.beneficiaries[0]
    patient = Patient(
        identity=Identity(
            birth_family_name="Martin",
            given_names="Jeanne Marie",
            birth_date=jeanne.birth_date,
            sex="F",
            nir=jeanne.nir,
        ),
        coverage=Coverage(amo=Amo(regime="01")),
    )
    pid, _ = save_patient(platform.store, crypto, patient, actor="t", today=date(2025, 1, 1))
    down = client_for(closed_port_url())
    queued = asyncio.run(run_check(platform.store, crypto, down, "rights", pid, actor="t"))
    assert queued.entity.status == "unchecked"
    assert "injoignable" in check_message(queued.entity)
    assert queued.entity.last_error
    # Still down: the worker's re-run keeps it queued, one more attempt counted.
    assert asyncio.run(rerun_unchecked(platform.store, crypto, down)) == {
        "checked": 0,
        "not_found": 0,
        "unchecked": 1,
        "skipped": 0,
    }
    # Back up: the same check (new version) becomes checked.
    counts = asyncio.run(rerun_unchecked(platform.store, crypto, client_for(simulator.url)))
    assert counts["checked"] == 1
    checks = checks_of(platform.store, pid)
    assert len(checks) == 1
    assert (checks[0].entity.status, checks[0].entity.attempts, checks[0].version) == (
        "checked",
        3,
        3,
    )
    assert checks[0].entity.rights is not None
    assert checks[0].entity.requested_at == queued.entity.requested_at


def test_hygie_sesam_simulate_serves_on_loopback(tmp_path: Path) -> None:
    """``hygie sesam simulate`` as an operator runs it: a process, loopback only."""
    hygie = Path(sys.executable).parent / "hygie"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYGIE_")}
    env.update(PYTHONUNBUFFERED="1", HYGIE_DATA_DIR=str(tmp_path), HYGIE_KEY_DIR=str(tmp_path))
    process = subprocess.Popen(
        [str(hygie), "sesam", "simulate", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert "SIMULATEUR LOCAL" in banner, banner
        url = banner.rsplit(" ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "simulator": True}
    finally:
        process.terminate()
        process.wait(timeout=10)
