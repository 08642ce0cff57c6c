"""Sync end to end: the real agent pushes over mutual TLS to the real cloud app, which stores
in a real MongoDB wire-protocol server (SecantusDB); the relay and the feed come back."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from appliance.cli import main
from appliance.config import Settings
from appliance.outbox import backlog_size, cursor_position, enqueue, read_inbox
from appliance.platform import Platform
from appliance.resilience import Breakers, RetryPolicy
from sync.agent import SyncAgent, SyncConfig, tenant_keyring
from sync.envelope import RELAY_KIND, RELAY_STREAM, open_entry
from sync.logic import run_once, status
from sync.server.gateway_simulator import create_gateway_app
from sync.server.relay import Relay
from sync.server.storage import CloudStore
from tests.test_sync_support import (
    TENANT,
    CloudServer,
    Pki,
    cloud,
    pki,
    secantus,
    sync_settings,
)

__all__ = ["cloud", "pki", "secantus"]  # fixtures


def _fill(platform: Platform, n: int, prefix: str = "e", streams: int = 3) -> None:
    with platform.store.write() as db:
        for i in range(n):
            enqueue(
                db,
                stream=f"s{i % streams}",
                kind="test.event",
                payload={"i": i, "prefix": prefix},
                idempotency_key=f"{prefix}-{i}",
            )


def test_push_over_mutual_tls_stores_ciphertext_once_in_order(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer
) -> None:
    pki.enroll(settings)
    s = sync_settings(settings, cloud.url, sync_batch_size=40)
    _fill(platform, 100)
    report = run_once(platform.store, s)
    assert report is not None
    assert report.ok, report
    assert (report.pushed, report.batches, report.backlog) == (100, 3, 0)
    assert cursor_position(platform.store.db) == 100
    stored = cloud.store.events(TENANT)
    assert [e.seq for e in stored] == list(range(1, 101))
    # The cloud holds ciphertext only; the tenant key opens it.
    raw = json.dumps([msgspec.to_builtins(e) for e in stored])
    assert '"prefix"' not in raw
    keyring = tenant_keyring(s)
    assert open_entry(TENANT, keyring, stored[5]) == {"i": 5, "prefix": "e"}
    for stream in ("s0", "s1", "s2"):
        seqs = [e.seq for e in cloud.store.events(TENANT, stream)]
        assert seqs == sorted(seqs)
    # Status after success.
    current = status(platform.store, s)
    assert current.backlog == 0
    assert current.last_success_at is not None
    assert current.breaker == "closed"
    assert current.tenant == TENANT


def test_client_without_certificate_or_from_another_ca_is_refused(
    pki: Pki, cloud: CloudServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
    with (
        pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
        httpx.Client(verify=context) as client,
    ):
        client.get(cloud.url + "/v1/health")
    other = Pki(tmp_path_factory.mktemp("other"))
    context.load_cert_chain(str(other.dir / "client.pem"), str(other.dir / "client.key"))
    with (
        pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
        httpx.Client(verify=context) as client,
    ):
        client.get(cloud.url + "/v1/health")


def test_teletransmission_relay_round_trip_reaches_the_right_pharmacy(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer
) -> None:
    """An FSE lot goes to the (simulated) gateway sealed for it; its ARL and payment return
    come back to this tenant's inbox, where billing reads them."""
    pki.enroll(settings)
    s = sync_settings(settings, cloud.url)
    with platform.store.write() as db:
        enqueue(
            db,
            stream=RELAY_STREAM,
            kind=RELAY_KIND,
            payload={"lot_id": "LOT-0001", "total_amount_cents": 4210, "invoices": 3},
            idempotency_key="fse-lot:LOT-0001",
        )
        enqueue(
            db,
            stream=RELAY_STREAM,
            kind=RELAY_KIND,
            payload={"invoices": 1},
            idempotency_key="fse-lot:broken",
        )
    report = run_once(platform.store, s)
    assert report is not None
    assert report.ok
    stored = cloud.store.event(TENANT, "fse-lot:LOT-0001")
    assert stored is not None
    assert stored.gateway_key is not None
    assert "LOT-0001" not in stored.ciphertext
    # The relay forwards to the simulator over real HTTP (in-process ASGI transport).
    gateway = create_gateway_app(pki.gateway_key)
    with TestClient(app=gateway, base_url="http://gateway") as gateway_client:
        relay = Relay(cloud.store, "http://gateway", gateway_client)
        assert relay.run_once() == 2
        assert relay.run_once() == 0, "a relayed lot is not forwarded twice"
    report = run_once(platform.store, s)
    assert report is not None
    assert report.received == 3
    items = read_inbox(platform.store.db, stream="teletransmission")
    kinds = [(i.kind, i.payload.get("status"), i.payload.get("lot_id")) for i in items]
    assert ("fse.ack", "accepted", "LOT-0001") in kinds
    assert ("fse.ack", "rejected", None) in kinds
    payment = next(i for i in items if i.kind == "fse.payment")
    assert payment.payload["amount_cents"] == 4210
    assert payment.payload["simulated"] is True
    # Pulling again brings nothing twice.
    again = run_once(platform.store, s)
    assert again is not None
    assert again.received == 0
    assert len(read_inbox(platform.store.db, stream="teletransmission")) == 3


def test_feed_is_per_tenant(pki: Pki, cloud: CloudServer) -> None:
    cloud.store.append_feed("autre-pharmacie", "k1", "knowledge", "update", {"v": 1})
    cloud.store.append_feed(TENANT, "k1", "knowledge", "update", {"v": 2})
    assert cloud.store.append_feed(TENANT, "k1", "knowledge", "update", {"v": 2}) == 1
    assert [i.payload for i in cloud.store.feed(TENANT, 0, 10)] == [{"v": 2}]


def test_status_command_and_api(
    platform: Platform,
    settings: Settings,
    client: TestClient,  # type: ignore[type-arg]
    token_for: Callable[..., str],
) -> None:
    _fill(platform, 5)
    result = CliRunner().invoke(main, ["sync", "status"])
    assert result.exit_code == 0, result.output
    assert "backlog:         5" in result.output
    assert "configured:      no" in result.output
    result = CliRunner().invoke(main, ["sync", "run"])
    assert result.exit_code != 0
    assert "non configurée" in result.output
    response = client.get(
        "/api/v1/sync/status", headers={"Authorization": f"Bearer {token_for('admin:sync')}"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["backlog"] == 5
    assert response.json()["oldest_pending"]["seq"] == 1
    forbidden = client.get(
        "/api/v1/sync/status", headers={"Authorization": f"Bearer {token_for('patients:read')}"}
    )
    assert forbidden.status_code == 403


def test_agent_breaker_opens_when_the_cloud_stays_down(
    platform: Platform, settings: Settings, pki: Pki
) -> None:
    from tests.test_sync_support import free_port

    pki.enroll(settings)
    s = sync_settings(settings, f"https://127.0.0.1:{free_port()}", breaker_threshold=2)
    _fill(platform, 3)
    agent = SyncAgent(
        platform.store,
        SyncConfig.from_settings(s),
        RetryPolicy.from_settings(s),
        Breakers.from_settings(s),
    )
    reports = [asyncio.run(agent.run()) for _ in range(3)]
    assert all(not r.ok for r in reports)
    assert "circuit open" in (reports[-1].error or "")
    assert status(platform.store, s).breaker == "opened"
    assert backlog_size(platform.store.db) == 3


def test_worker_task_pushes_when_configured(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer
) -> None:
    from dataclasses import replace

    from huey import MemoryHuey

    from sync import register_tasks

    huey = MemoryHuey(immediate=True)
    register_tasks(huey, platform)
    periodic = huey._registry._periodic_tasks
    assert [task.__name__ for task in periodic] == ["sync_push_pull"]
    periodic[0]().execute()  # sync_url unset: a no-op
    pki.enroll(settings)
    _fill(platform, 7)
    configured = replace(platform, settings=sync_settings(settings, cloud.url))
    huey = MemoryHuey(immediate=True)
    register_tasks(huey, configured)
    huey._registry._periodic_tasks[0]().execute()
    assert backlog_size(platform.store.db) == 0
    assert [e.seq for e in cloud.store.events(TENANT)] == list(range(1, 8))


def test_sync_server_commands(
    pki: Pki, secantus: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync.server.app import main as server_main
    from sync.server.pki import tenant_of_pem_file
    from tests.test_sync_support import Secantus

    assert isinstance(secantus, Secantus)
    runner = CliRunner()
    ca_dir = tmp_path / "ca"
    result = runner.invoke(server_main, ["init-ca", str(ca_dir)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(server_main, ["init-ca", str(ca_dir)]).exit_code != 0
    out = tmp_path / "appliance"
    result = runner.invoke(server_main, ["issue-appliance", str(ca_dir), "pharma-42", str(out)])
    assert result.exit_code == 0, result.output
    assert tenant_of_pem_file(out / "sync-client.pem") == "pharma-42"
    bad = runner.invoke(server_main, ["issue-appliance", str(ca_dir), "Pharma 42!", str(out)])
    assert bad.exit_code != 0
    database = f"cli{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("HYGIE_SYNC_SERVER_MONGO_URI", secantus.uri)
    monkeypatch.setenv("HYGIE_SYNC_SERVER_DATABASE", database)
    payload = tmp_path / "update.json"
    payload.write_text('{"thesaurus": "2025-07"}')
    args = [
        "publish",
        "--tenant",
        "pharma-42",
        "--stream",
        "knowledge",
        "--kind",
        "knowledge.update",
        "--id",
        "thesaurus-2025-07",
        str(payload),
    ]
    first = runner.invoke(server_main, args)
    again = runner.invoke(server_main, args)
    assert first.exit_code == again.exit_code == 0, first.output
    assert "feed position 1" in again.output
    store = CloudStore.connect(secantus.uri, database)
    try:
        assert [i.payload for i in store.feed("pharma-42", 0, 10)] == [{"thesaurus": "2025-07"}]
    finally:
        store.client.drop_database(database)
        store.close()


def test_lot_not_sealed_for_the_gateway_is_held_and_reported(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer
) -> None:
    from sync.agent import GATEWAY_KEY

    pki.enroll(settings)
    (settings.key_path / GATEWAY_KEY).unlink()
    s = sync_settings(settings, cloud.url)
    with platform.store.write() as db:
        enqueue(
            db,
            stream=RELAY_STREAM,
            kind=RELAY_KIND,
            payload={"lot_id": "LOT-9"},
            idempotency_key="fse-lot:LOT-9",
        )
    report = run_once(platform.store, s)
    assert report is not None
    assert report.ok
    gateway = create_gateway_app(pki.gateway_key)
    with TestClient(app=gateway, base_url="http://gateway") as gateway_client:
        relay = Relay(cloud.store, "http://gateway", gateway_client)
        assert relay.run_once() == 0
    assert [i["kind"] for i in cloud.store.incidents(TENANT)] == ["unsealed-lot"]
    assert cloud.store.feed(TENANT, 0, 10) == []
