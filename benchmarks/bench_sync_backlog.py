"""Offline backlog: 100,000 pending outbox items, status cost, then the drain on reconnect.

Run from the repository root:

    .venv/bin/python benchmarks/bench_sync_backlog.py [--items 100000] [--batch 500]
        [--write-mode insert]

A throw-away appliance (real SQLCipher store, migrated) gets ``--items`` outbox entries by
bulk insert (as if the link had been down for weeks), ``hygie sync status``'s queries are
timed, then the real agent drains everything to ``hygie-sync-server`` (own process, mutual
TLS) backed by SecantusDB (own process). Checked afterwards: every sequence stored once,
in order, per stream.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymongo
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_sync import free_port, wait_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--write-mode", choices=["upsert", "insert"], default="insert")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-backlog-"))
    os.environ.update(
        {
            "HYGIE_ENV": "dev",
            "HYGIE_CONFIG_FILE": str(work / "hygie.toml"),
            "HYGIE_DATA_DIR": str(work / "data"),
            "HYGIE_KEY_DIR": str(work / "keys"),
            "HYGIE_MIN_FREE_DISK_MB": "1",
        }
    )
    (work / "hygie.toml").write_text("")
    from appliance.cli import main as hygie
    from appliance.config import load_settings
    from appliance.keys import write_secret
    from appliance.platform import open_platform
    from sync.agent import CLIENT_CERT, CLIENT_KEY, CLOUD_CA, TENANT_KEY
    from sync.logic import run_once, status
    from sync.server.pki import issue_appliance, issue_server, new_ca

    for command in (["keys", "init"], ["db", "migrate"]):
        result = CliRunner().invoke(hygie, command)
        assert result.exit_code == 0, result.output
    ca = new_ca()
    server = issue_server(ca, ["localhost"], ["127.0.0.1"])
    client = issue_appliance(ca, "backlog-bench")
    for name, data in (
        ("ca.pem", ca.cert_pem),
        ("server.pem", server.cert_pem),
        ("server.key", server.key_pem),
    ):
        (work / name).write_bytes(data)
    keys = work / "keys"
    write_secret(keys / CLIENT_CERT, client.cert_pem)
    write_secret(keys / CLIENT_KEY, client.key_pem)
    write_secret(keys / CLOUD_CA, ca.cert_pem)
    write_secret(keys / TENANT_KEY, os.urandom(32).hex().encode() + b"\n")

    mongo_port, server_port = free_port(), free_port()
    processes = [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "secantusd-py"),
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
    ]
    uri = f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true"
    try:
        wait_for(
            lambda: pymongo.MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping"),
            30,
            "SecantusDB",
        )
        settings = load_settings().model_copy(
            update={
                "sync_url": f"https://127.0.0.1:{server_port}",
                "sync_batch_size": args.batch,
            }
        )
        platform = open_platform(settings)
        rows = [
            ("2026-11-01T00:00:00+00:00", f"s{i % 5}", "bench", f'{{"i":{i}}}', f"k{i}")
            for i in range(args.items)
        ]
        began = time.perf_counter()
        with platform.store.write() as db:
            db.conn.executemany(
                "INSERT INTO sync_outbox (created_at, stream, kind, payload, idempotency_key) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        insert_s = time.perf_counter() - began
        began = time.perf_counter()
        offline = run_once(platform.store, settings)  # cloud down: nothing moves
        down_s = time.perf_counter() - began
        assert offline is not None
        assert not offline.ok
        began = time.perf_counter()
        current = status(platform.store, settings)
        status_ms = (time.perf_counter() - began) * 1000
        assert current.backlog == args.items
        env = {
            **os.environ,
            "HYGIE_SYNC_SERVER_MONGO_URI": uri,
            "HYGIE_SYNC_SERVER_DATABASE": "backlog",
            "HYGIE_SYNC_SERVER_PORT": str(server_port),
            "HYGIE_SYNC_SERVER_WRITE_MODE": args.write_mode,
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
        time.sleep(3)
        began = time.perf_counter()
        report = run_once(platform.store, settings)
        drain_s = time.perf_counter() - began
        assert report is not None
        assert report.ok, report
        events = pymongo.MongoClient(uri)["backlog"]["events"]
        seqs = [d["seq"] for d in events.find({}, {"seq": 1}).sort("seq", 1)]
        in_order = seqs == list(range(1, args.items + 1))
        platform.close()
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
    print(f"bulk insert of {args.items} outbox items: {insert_s:.2f} s")
    print(f"run with the cloud down (retries, breaker): {down_s:.2f} s, backlog kept")
    print(f"status over {args.items} pending: {status_ms:.1f} ms")
    print(
        f"drain on reconnect: {drain_s:.1f} s ({args.items / drain_s:.0f} items/s, "
        f"{report.batches} batches of {args.batch}, write mode {args.write_mode})"
    )
    print(f"every sequence stored once and in order: {in_order}")


if __name__ == "__main__":
    main()
