"""Foundation benchmark: encrypted store writes, audit appends and audit verification.

Run: ``.venv/bin/python benchmarks/bench_store.py [--entries N]``. It works in a temporary
directory with fresh keys and prints figures with the ratio to the appliance's own goals
(the issues set none for the foundation; these goals are ours: a counter screen that audits
each read must not wait on the log).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.audit import AUDIT_MIGRATIONS, AuditEvent, AuditLog
from appliance.store import Store, VersionedTable, apply_migrations

GOALS_MS = {"versioned write p50": 5.0, "audit append p50": 5.0, "audit verify per 10k": 500.0}


class Sample(msgspec.Struct, frozen=True):
    label: str
    value: int


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _report(name: str, samples_ms: list[float]) -> None:
    p50, p99 = statistics.median(samples_ms), _percentile(samples_ms, 0.99)
    goal = GOALS_MS.get(f"{name} p50")
    ratio = f"  (goal p50 <= {goal} ms: {p50 / goal:.2f}x of goal)" if goal else ""
    print(f"{name:<22} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  n={len(samples_ms)}{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=2000)
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        store = Store.open(base / "domain.db", os.urandom(32), create=True)
        table: VersionedTable[Sample] = VersionedTable("samples", Sample)
        apply_migrations(store, [table.create_table_migration("samples", 1)])
        writes = []
        for i in range(args.entries):
            started = time.perf_counter()
            with store.write() as db:
                table.append(db, f"s{i}", Sample("x", i), actor="bench", expected_version=0)
            writes.append((time.perf_counter() - started) * 1000)
        _report("versioned write", writes)

        audit_store = Store.open(base / "audit.db", os.urandom(32), create=True)
        apply_migrations(audit_store, list(AUDIT_MIGRATIONS))
        log = AuditLog(audit_store, Ed25519PrivateKey.generate(), checkpoint_every=100)
        appends = []
        for i in range(args.entries):
            event = AuditEvent(
                actor="user:bench",
                role="pharmacien_titulaire",
                action="read",
                object_type="patient",
                object_id=f"p-{i}",
                purpose="care",
                client_addr="192.168.1.10",
                outcome="success",
            )
            started = time.perf_counter()
            log.record(event)
            appends.append((time.perf_counter() - started) * 1000)
        _report("audit append", appends)

        started = time.perf_counter()
        result = log.verify()
        elapsed = (time.perf_counter() - started) * 1000
        per_10k = elapsed * 10_000 / max(1, result.entries_checked)
        goal = GOALS_MS["audit verify per 10k"]
        print(
            f"audit verify           {result.entries_checked} entries in {elapsed:.1f} ms "
            f"= {per_10k:.1f} ms per 10k (goal <= {goal} ms: {per_10k / goal:.2f}x of goal), "
            f"ok={result.ok}"
        )
        store.close()
        audit_store.close()


if __name__ == "__main__":
    main()
