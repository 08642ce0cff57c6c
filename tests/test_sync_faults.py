"""Faults of the link to the cloud, each against the real agent, cloud app and SecantusDB.

After every fault: no event lost, none applied twice, order kept per stream.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest

from appliance import outbox
from appliance.config import Settings
from appliance.keys import write_secret
from appliance.outbox import backlog_size, cursor_position, enqueue
from appliance.platform import Platform
from sync.agent import TENANT_KEY, SyncConfig
from sync.envelope import DIGEST_HEADER, Ack, Batch, body_digest, encode_batch
from sync.logic import run_once, status
from sync.server.pki import client_ssl_context
from tests.test_sync_support import (
    TENANT,
    CloudServer,
    CuttingProxy,
    DropAnswers,
    FailFirst,
    Pki,
    cloud,
    pki,
    secantus,
    sync_settings,
)

__all__ = ["cloud", "pki", "secantus"]  # fixtures


def _fill(platform: Platform, start: int, n: int, streams: int = 4) -> None:
    with platform.store.write() as db:
        for i in range(start, start + n):
            enqueue(
                db,
                stream=f"s{i % streams}",
                kind="test.event",
                payload={"i": i},
                idempotency_key=f"ev-{i}",
            )


def assert_exactly_once_in_order(cloud: CloudServer, n: int) -> None:
    events = cloud.store.events(TENANT)
    assert [e.seq for e in events] == list(range(1, n + 1)), "an event is missing or doubled"
    assert len({e.idempotency_key for e in events}) == n
    for stream in {e.stream for e in events}:
        seqs = [e.seq for e in cloud.store.events(TENANT, stream)]
        assert seqs == sorted(seqs)


def _ok(platform: Platform, s: Settings) -> None:
    report = run_once(platform.store, s)
    assert report is not None
    assert report.ok, report


def test_cloud_down_during_push_then_back(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer
) -> None:
    pki.enroll(settings)
    s = sync_settings(settings, cloud.url, sync_batch_size=25)
    _fill(platform, 0, 60)
    cloud.stop()
    report = run_once(platform.store, s)
    assert report is not None
    assert not report.ok
    assert report.error
    assert backlog_size(platform.store.db) == 60
    assert status(platform.store, s).last_error is not None
    # The counter keeps working offline: new changes queue behind the old ones.
    _fill(platform, 60, 15)
    time.sleep(0.6)  # past the breaker's open period
    cloud.start()
    _ok(platform, s)
    assert backlog_size(platform.store.db) == 0
    assert_exactly_once_in_order(cloud, 75)


@pytest.mark.parametrize("mode", ["after_store", "mid_request"])
def test_connection_cut_mid_batch(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer, mode: str
) -> None:
    """Cut after the cloud stored a batch (its acknowledgement lost), or halfway through the
    upload; the agent's retries deliver the rest, nothing twice."""
    proxy = CuttingProxy(cloud.port)
    try:
        if mode == "after_store":
            cloud.stop()
            cloud.start(wrap=lambda app: DropAnswers(app, proxy, 2))
        else:
            proxy.cut_next = 2
        pki.enroll(settings)
        s = sync_settings(settings, f"https://127.0.0.1:{proxy.port}", sync_batch_size=100)
        _fill(platform, 0, 300)
        report = run_once(platform.store, s)
        assert report is not None
        assert report.ok, report
        assert proxy.cuts == 2
        if mode == "after_store":
            # the first batch is stored, its answer lost on two attempts in a row; the third
            # attempt is acknowledged with its 100 entries as duplicates, none stored twice
            assert (report.pushed, report.duplicates) == (200, 100)
        else:
            assert (report.pushed, report.duplicates) == (300, 0)
        assert cursor_position(platform.store.db) == 300
        assert_exactly_once_in_order(cloud, 300)
    finally:
        proxy.close()


def _post(pki: Pki, cloud: CloudServer, body: bytes, digest: str | None = None) -> httpx.Response:
    context = client_ssl_context(pki.dir / "client.pem", pki.dir / "client.key", pki.dir / "ca.pem")
    with httpx.Client(verify=context, base_url=cloud.url) as client:
        return client.post(
            "/v1/batches",
            content=body,
            headers={
                "content-type": "application/json",
                DIGEST_HEADER: digest or body_digest(body),
            },
        )


def _sealed_batch(platform: Platform, s: Settings) -> Batch:
    from appliance.resilience import Breakers, RetryPolicy
    from sync.agent import SyncAgent

    agent = SyncAgent(
        platform.store,
        SyncConfig.from_settings(s),
        RetryPolicy.from_settings(s),
        Breakers.from_settings(s),
    )
    return agent.seal(outbox.pending_batch(platform.store.db, limit=50))


def test_same_batch_delivered_twice_is_acknowledged_not_applied_twice(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer
) -> None:
    pki.enroll(settings)
    s = sync_settings(settings, cloud.url)
    _fill(platform, 0, 20)
    batch = _sealed_batch(platform, s)
    first = _post(pki, cloud, encode_batch(batch))
    again = msgspec.structs.replace(batch, delivery_id=uuid.uuid4().hex)
    second = _post(pki, cloud, encode_batch(again))
    assert first.status_code == second.status_code == 200
    acks = [msgspec.json.decode(r.content, type=Ack) for r in (first, second)]
    assert (acks[0].stored, acks[0].duplicates) == (20, 0)
    assert (acks[1].stored, acks[1].duplicates) == (0, 20)
    assert_exactly_once_in_order(cloud, 20)
    # The agent then sends the same entries a third time: acknowledged as duplicates.
    report = run_once(platform.store, s)
    assert report is not None
    assert (report.ok, report.pushed, report.duplicates) == (True, 0, 20)
    assert_exactly_once_in_order(cloud, 20)


def test_corrupt_and_replayed_batches_are_refused_and_reported(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer
) -> None:
    pki.enroll(settings)
    s = sync_settings(settings, cloud.url)
    _fill(platform, 0, 10)
    batch = _sealed_batch(platform, s)
    body = encode_batch(batch)
    # 1. bytes altered in transit: the digest no longer matches.
    tampered = body.replace(b'"seq":3', b'"seq":4', 1)
    assert _post(pki, cloud, tampered, digest=body_digest(body)).status_code == 400
    # 2. an entry altered and the digest recomputed: its content hash gives it away.
    entry = batch.entries[2]
    forged_entry = msgspec.structs.replace(entry, ciphertext=entry.ciphertext[::-1])
    forged = msgspec.structs.replace(
        batch, entries=[*batch.entries[:2], forged_entry, *batch.entries[3:]]
    )
    assert _post(pki, cloud, encode_batch(forged)).status_code == 400
    # 3. not JSON at all.
    assert _post(pki, cloud, b"\x00garbage").status_code == 400
    # 4. the genuine batch is stored; replaying the very same request is refused.
    assert _post(pki, cloud, body).status_code == 200
    assert _post(pki, cloud, body).status_code == 409
    # 5. another batch naming another tenant than the certificate.
    other = msgspec.structs.replace(batch, tenant="pharmacie-voisine", delivery_id=uuid.uuid4().hex)
    assert _post(pki, cloud, encode_batch(other)).status_code == 400
    kinds = [i["kind"] for i in cloud.store.incidents(TENANT)]
    assert kinds == ["corrupt", "corrupt", "corrupt", "replay", "corrupt"]
    assert_exactly_once_in_order(cloud, 10)


def test_agent_reports_a_refusal_and_keeps_its_backlog(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer
) -> None:
    """Different content under an already stored key (here: the box restored with another
    tenant key and an old cursor) is refused; the agent reports it and loses nothing."""
    pki.enroll(settings)
    s = sync_settings(settings, cloud.url)
    _fill(platform, 0, 10)
    _ok(platform, s)
    write_secret(s.key_path / TENANT_KEY, (b"cd" * 32) + b"\n")
    with platform.store.write() as db:
        db.execute("UPDATE sync_cursors SET position = 0 WHERE name = 'push'")
    report = run_once(platform.store, s)
    assert report is not None
    assert not report.ok
    assert report.refused is not None
    assert "409" in report.refused
    current = status(platform.store, s)
    assert current.last_refusal is not None
    assert current.backlog == 10
    assert [i["kind"] for i in cloud.store.incidents(TENANT)] == ["replay"]
    assert_exactly_once_in_order(cloud, 10)


def test_cloud_answers_500_then_recovers(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer
) -> None:
    pki.enroll(settings)
    s = sync_settings(settings, cloud.url, sync_batch_size=10)
    _fill(platform, 0, 30)
    cloud.stop()
    flaky: list[FailFirst] = []

    def wrap(app: object) -> FailFirst:
        flaky.append(FailFirst(app, 2))
        return flaky[0]

    cloud.start(wrap=wrap)
    _ok(platform, s)  # 2 failures absorbed by the retries (3 attempts)
    assert flaky[0].failed == 2
    # A longer outage: the run gives up, then a later run recovers.
    _fill(platform, 30, 10)
    flaky[0].remaining = 20
    report = run_once(platform.store, s)
    assert report is not None
    assert not report.ok
    flaky[0].remaining = 0
    time.sleep(0.6)
    _ok(platform, s)
    assert_exactly_once_in_order(cloud, 40)


def test_appliance_clock_set_back(
    platform: Platform,
    settings: Settings,
    pki: Pki,
    cloud: CloudServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sequences, not timestamps, order everything: a clock set back a day reorders nothing."""
    pki.enroll(settings)
    s = sync_settings(settings, cloud.url, sync_batch_size=7)
    _fill(platform, 0, 10)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    monkeypatch.setattr(outbox, "_now", lambda: yesterday.isoformat())
    _fill(platform, 10, 10)
    oldest = status(platform.store, s).oldest_pending
    assert oldest is not None
    assert oldest.seq == 1
    _ok(platform, s)
    events = cloud.store.events(TENANT)
    assert events[-1].created_at < events[0].created_at  # the clock did go back
    assert_exactly_once_in_order(cloud, 20)


@pytest.mark.slow
def test_agent_killed_with_sigkill_mid_batch(
    platform: Platform, settings: Settings, pki: Pki, cloud: CloudServer
) -> None:
    pki.enroll(settings)
    total = 800
    s = sync_settings(settings, cloud.url, sync_batch_size=50)
    _fill(platform, 0, total)
    env = {
        **os.environ,
        "HYGIE_SYNC_URL": cloud.url,
        "HYGIE_SYNC_BATCH_SIZE": "50",
        "HYGIE_RETRY_ATTEMPTS": "2",
        "HYGIE_RETRY_INITIAL_WAIT_S": "0.01",
    }
    hygie = Path(sys.executable).parent / "hygie"
    child = subprocess.Popen(
        [str(hygie), "sync", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if cloud.store.col("events").count_documents({"tenant": TENANT}) >= 100:
            break
        time.sleep(0.01)
    assert child.poll() is None, "the agent finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    stored = cloud.store.col("events").count_documents({"tenant": TENANT})
    acked = cursor_position(platform.store.db)
    assert acked <= stored < total, (acked, stored)
    _ok(platform, s)
    assert cursor_position(platform.store.db) == total
    assert_exactly_once_in_order(cloud, total)


def test_insert_write_mode_is_exactly_once_too(
    platform: Platform, settings: Settings, pki: Pki, secantus: object
) -> None:
    """The faster ``insert`` mode: duplicates and sequence conflicts resolved the same way."""
    from tests.test_sync_support import Secantus

    assert isinstance(secantus, Secantus)
    server = CloudServer(pki, secantus.uri, write_mode="insert")
    server.start()
    try:
        pki.enroll(settings)
        s = sync_settings(settings, server.url)
        _fill(platform, 0, 20)
        batch = _sealed_batch(platform, s)
        assert _post(pki, server, encode_batch(batch)).status_code == 200
        # the same entries stored meanwhile by "another delivery": seen as duplicates
        server.store.col("events").delete_many({"seq": {"$gt": 15}})
        again = msgspec.structs.replace(batch, delivery_id=uuid.uuid4().hex)
        ack = msgspec.json.decode(_post(pki, server, encode_batch(again)).content, type=Ack)
        assert (ack.stored, ack.duplicates) == (5, 15)
        _ok(platform, s)
        # another key under a stored sequence: refused
        moved = msgspec.structs.replace(batch.entries[0], idempotency_key="forged")
        from sync.envelope import content_hash

        moved = msgspec.structs.replace(moved, content_hash=content_hash(TENANT, moved))
        forged = msgspec.structs.replace(
            batch, delivery_id=uuid.uuid4().hex, entries=[moved], last_seq=moved.seq
        )
        assert _post(pki, server, encode_batch(forged)).status_code == 409
        assert_exactly_once_in_order(server, 20)
    finally:
        server.close()
