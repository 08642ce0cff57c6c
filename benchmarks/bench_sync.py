"""Cloud sync load test: N simulated appliances push M events each to the real cloud service.

Run from the repository root:

    .venv/bin/python benchmarks/bench_sync.py [--appliances 200] [--events 1000] [--batch 100]
        [--concurrency 200] [--json FILE]

What runs: a SecantusDB server (MongoDB wire protocol) and ``hygie-sync-server serve`` in
their own processes, on loopback, under mutual TLS 1.3; each simulated appliance has its own
client certificate (its tenant) and seals its events with the real envelope code
(AES-256-GCM per entry, deterministic data keys wrapped under its tenant key), then pushes
batches one after the other and waits for each acknowledgement (written with write concern
majority + journaled) before the next, as the agent does. Reported: events acknowledged per
second (wall clock, all appliances together) and the acknowledgement latency of a batch
(send to ack) p50 / p99 / max. Goals (ours; the issue sets none): p99 ≤ 2 s per 100-event batch
with 200 appliances pushing at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pymongo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sync.envelope import (  # noqa: E402
    DIGEST_HEADER,
    PROTOCOL_VERSION,
    Ack,
    Batch,
    body_digest,
    encode_batch,
    seal_entry,
)
from sync.server.pki import issue_appliance, issue_server, new_ca  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def appliance(
    index: int,
    url: str,
    context: ssl.SSLContext,
    events: int,
    batch_size: int,
    latencies: list[float],
    start: asyncio.Event,
) -> int:
    tenant = f"bench-{index:04d}"
    key = os.urandom(32)
    sealed = [
        seal_entry(
            tenant,
            key,
            seq=i,
            stream=f"s{i % 4}",
            kind="bench.event",
            idempotency_key=f"{tenant}-{i}",
            created_at="2026-11-25T00:00:00+00:00",
            payload={"i": i, "pseudonym": uuid.uuid4().hex, "atc": "C09AA05"},
        )
        for i in range(1, events + 1)
    ]
    acked = 0
    async with httpx.AsyncClient(base_url=url, verify=context, timeout=120) as client:
        await start.wait()
        for offset in range(0, events, batch_size):
            entries = sealed[offset : offset + batch_size]
            batch = Batch(
                version=PROTOCOL_VERSION,
                tenant=tenant,
                delivery_id=uuid.uuid4().hex,
                first_seq=entries[0].seq,
                last_seq=entries[-1].seq,
                entries=entries,
            )
            body = encode_batch(batch)
            for _attempt in range(5):
                began = time.perf_counter()
                response = await client.post(
                    "/v1/batches",
                    content=body,
                    headers={"content-type": "application/json", DIGEST_HEADER: body_digest(body)},
                )
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.5)
            else:
                raise RuntimeError(f"{tenant}: cloud answered {response.status_code}")
            latencies.append(time.perf_counter() - began)
            acked += msgspec.json.decode(response.content, type=Ack).stored
    return acked


async def load(
    url: str, contexts: list[ssl.SSLContext], events: int, batch: int, concurrency: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    start = asyncio.Event()
    limit = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> int:
        async with limit:
            return await appliance(i, url, contexts[i], events, batch, latencies, start)

    tasks = [asyncio.create_task(limited(i)) for i in range(len(contexts))]
    await asyncio.sleep(0.5)  # let each appliance seal its events first
    began = time.perf_counter()
    start.set()
    acked = sum(await asyncio.gather(*tasks))
    return time.perf_counter() - began, latencies, acked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--appliances", type=int, default=200)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--write-mode", choices=["upsert", "insert"], default="upsert")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        mongo_port, server_port = free_port(), free_port()
        processes.append(
            subprocess.Popen(
                [
                    str(BIN / "secantusd-py"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(mongo_port),
                    "--storage-path",
                    str(work / "mongo"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        uri = f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true"
        wait_for(
            lambda: pymongo.MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping"),
            30,
            "SecantusDB",
        )
        ca = new_ca()
        server = issue_server(ca, ["localhost"], ["127.0.0.1"])
        for name, data in (
            ("ca.pem", ca.cert_pem),
            ("server.pem", server.cert_pem),
            ("server.key", server.key_pem),
        ):
            (work / name).write_bytes(data)
        env = {
            **os.environ,
            "HYGIE_SYNC_SERVER_MONGO_URI": uri,
            "HYGIE_SYNC_SERVER_DATABASE": "bench",
            "HYGIE_SYNC_SERVER_WRITE_MODE": args.write_mode,
            "HYGIE_SYNC_SERVER_PORT": str(server_port),
            "HYGIE_SYNC_SERVER_CERT_FILE": str(work / "server.pem"),
            "HYGIE_SYNC_SERVER_KEY_FILE": str(work / "server.key"),
            "HYGIE_SYNC_SERVER_CLIENT_CA_FILE": str(work / "ca.pem"),
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "sync.server.app", "serve"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        contexts = []
        for i in range(args.appliances):
            issued = issue_appliance(ca, f"bench-{i:04d}")
            (work / "c.pem").write_bytes(issued.cert_pem)
            (work / "c.key").write_bytes(issued.key_pem)
            context = ssl.create_default_context(cafile=str(work / "ca.pem"))
            context.load_cert_chain(str(work / "c.pem"), str(work / "c.key"))
            contexts.append(context)
        url = f"https://127.0.0.1:{server_port}"
        wait_for(
            lambda: httpx.get(url + "/v1/health", verify=contexts[0]).status_code == 200,
            60,
            "hygie-sync-server",
        )
        elapsed, latencies, acked = asyncio.run(
            load(url, contexts, args.events, args.batch, args.concurrency)
        )
        stored = pymongo.MongoClient(uri)["bench"]["events"].count_documents({})
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    total = args.appliances * args.events
    figures = {
        "appliances": args.appliances,
        "events_per_appliance": args.events,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "write_mode": args.write_mode,
        "events_acked": acked,
        "events_stored": stored,
        "wall_s": round(elapsed, 2),
        "events_per_s": round(acked / elapsed, 1),
        "batches": len(latencies),
        "ack_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "ack_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "ack_max_ms": round(max(latencies) * 1000, 1),
    }
    print(json.dumps(figures, indent=2))
    print(f"every event stored exactly once: {stored == acked == total}")
    print(f"p99 ack latency / goal 2000 ms: {figures['ack_p99_ms'] / 2000:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
