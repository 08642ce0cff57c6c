"""Medication knowledge figures: BDPM import time and memory, ATC coverage, thesaurus, search.

Run from the repository root (needs the shared data beside the repository):

    .venv/bin/python benchmarks/bench_catalog.py [--bdpm DIR] [--queries 1000] [--json FILE]

It builds a throw-away appliance (keys, encrypted databases) in a temporary folder, imports
the full BDPM through ``hygie catalog import`` in a child process (so its peak memory is the
import's own), then times 1,000 catalog searches and prints every figure with its goal.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
GOALS = {
    "import_s": 30.0,
    "atc_coverage_marketed": 0.90,
    "thesaurus_mapped": 0.95,
    "search_p50_ms": 2.0,
}


def _env(base: Path) -> dict[str, str]:
    (base / "hygie.toml").write_text("# benchmark\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYGIE_")}
    env.update(
        {
            "HYGIE_ENV": "dev",
            "HYGIE_CONFIG_FILE": str(base / "hygie.toml"),
            "HYGIE_DATA_DIR": str(base / "data"),
            "HYGIE_KEY_DIR": str(base / "keys"),
            "HYGIE_LOG_JSON": "true",
        }
    )
    return env


def _hygie(env: dict[str, str], *args: str) -> tuple[str, float, int]:
    """Run ``hygie ARGS`` in a child; return output, wall seconds and peak RSS (KiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise SystemExit(f"hygie {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout, elapsed, max(peak, before)


def _queries(store: Any, count: int) -> list[str]:
    """A realistic mix: name prefixes, substances, CIS, CIP13 and DataMatrix scans."""
    rng = random.Random(20250701)
    names = [r[0] for r in store.db.execute("SELECT name FROM med_specialities")]
    substances = [
        r[0] for r in store.db.execute("SELECT DISTINCT substance_name FROM med_components")
    ]
    boxes = [r for r in store.db.execute("SELECT cis, cip13 FROM med_presentations")]
    mix: list[str] = []
    for index in range(count):
        kind = index % 5
        if kind == 0:
            mix.append(rng.choice(names)[: rng.randint(3, 8)])
        elif kind == 1:
            mix.append(rng.choice(substances).split(" ")[0].lower())
        elif kind == 2:
            mix.append(rng.choice(boxes)[0])
        elif kind == 3:
            mix.append(rng.choice(boxes)[1])
        else:
            mix.append(f"010{rng.choice(boxes)[1]}17270131\x1d10LOT42")
    return mix


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(bdpm: Path, queries: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    figures: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    }
    with tempfile.TemporaryDirectory(prefix="hygie-bench-") as scratch:
        env = _env(Path(scratch))
        _hygie(env, "keys", "init")
        _hygie(env, "db", "migrate")
        output, elapsed, peak_kib = _hygie(env, "catalog", "import", str(bdpm))
        figures["import_wall_s"] = round(elapsed, 2)
        figures["import_peak_rss_mib"] = round(peak_kib / 1024, 1)
        figures["import_output_tail"] = output.strip().splitlines()[-2:]
        os.environ.update(env)
        import msgspec

        from appliance.config import load_settings
        from appliance.platform import open_platform
        from services.medications import current_thesaurus
        from services.medications import store as repository
        from services.medications.atc import coverage_ratios
        from services.medications.models import CatalogImportReport

        platform = open_platform(load_settings())
        try:
            last = repository.last_import(platform.store, "catalog")
            assert last is not None
            report = msgspec.json.decode(last["report"], type=CatalogImportReport)
            assert report.coverage is not None
            figures["atc_coverage"] = coverage_ratios(report.coverage)
            figures["atc_by_source"] = report.coverage.by_source
            figures["atc_ambiguous_marketed"] = report.coverage.ambiguous
            figures["counts"] = report.counts
            mix = _queries(platform.store, queries)
            for query in mix[:50]:  # warm the page cache and the statement cache
                repository.search(platform.store, query)
            timings = []
            empty = 0
            for query in mix:
                started = time.perf_counter()
                found = repository.search(platform.store, query)
                timings.append((time.perf_counter() - started) * 1000)
                empty += not found
            figures["search"] = {
                "queries": len(mix),
                "p50_ms": round(statistics.median(timings), 3),
                "p99_ms": round(_percentile(timings, 0.99), 3),
                "max_ms": round(max(timings), 3),
                "no_result": empty,
            }
            thesaurus = current_thesaurus(platform.store)
            figures["thesaurus"] = {"edition": thesaurus.edition, **thesaurus.data.stats}
            substances = [e for e in thesaurus.data.entities if e.kind == "substance"]
            reachable = [e for e in substances if e.atc or e.combination_atc or e.substance_codes]
            # What the engine can match: a substance reached through the catalog's ATC codes
            # or through its BDPM substance codes (interactions_for_specialities uses both).
            figures["thesaurus"]["substances_reachable_share"] = round(
                len(reachable) / len(substances), 4
            )
            started = time.perf_counter()
            for _ in range(1000):
                thesaurus.check(
                    {"a": thesaurus.keys_for_atc("C01BD01"), "b": thesaurus.keys_for_atc("C10AA01")}
                )
            figures["thesaurus_check_pair_us"] = round((time.perf_counter() - started) * 1000, 1)
        finally:
            platform.close()
    return figures


def _ratio(value: float, goal: float, *, lower_is_better: bool) -> str:
    ok = value <= goal if lower_is_better else value >= goal
    return f"{'OK  ' if ok else 'MISS'} ({value / goal:.2f} x goal {goal})"


def main() -> None:
    parser = argparse.ArgumentParser(description="Medication knowledge benchmark")
    parser.add_argument("--bdpm", type=Path, default=SHARED / "bdpm-2025-07")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    figures = run(args.bdpm, args.queries)
    coverage = figures["atc_coverage"]
    search = figures["search"]
    thesaurus = figures["thesaurus"]
    print(f"machine: {figures['machine']}")
    print(
        f"BDPM import (full, {args.bdpm.name}): {figures['import_wall_s']} s wall "
        f"(process start included), peak RSS {figures['import_peak_rss_mib']} MiB  "
        + _ratio(figures["import_wall_s"], GOALS["import_s"], lower_is_better=True)
    )
    print(
        f"ATC coverage, marketed specialities: {coverage['marketed_specialities']:.1%}  "
        + _ratio(
            coverage["marketed_specialities"], GOALS["atc_coverage_marketed"], lower_is_better=False
        )
    )
    for name, share in coverage.items():
        print(f"  {name.replace('_', ' ')}: {share:.1%}")
    print(f"  assignments by source (marketed): {figures['atc_by_source']}")
    print(f"  marketed left out as ambiguous: {figures['atc_ambiguous_marketed']}")
    print(
        f"thesaurus {thesaurus['edition']}: {int(thesaurus['pairs'])} pairs "
        f"({int(thesaurus['directional_entries'])} entries), {int(thesaurus['classes'])} classes, "
        f"{int(thesaurus['substances'])} substances"
    )
    print(
        f"  substances mapped to ATC: {thesaurus['substances_mapped_share']:.1%}  "
        + _ratio(
            thesaurus["substances_mapped_share"], GOALS["thesaurus_mapped"], lower_is_better=False
        )
    )
    print(
        "  substances reachable from the catalog (ATC or BDPM substance code): "
        f"{thesaurus['substances_reachable_share']:.1%}"
    )
    print(f"  pairs with parse warnings: {int(thesaurus['pairs_with_warnings'])}")
    print(
        f"catalog search over {search['queries']} queries: p50 {search['p50_ms']} ms, "
        f"p99 {search['p99_ms']} ms, max {search['max_ms']} ms  "
        + _ratio(search["p50_ms"], GOALS["search_p50_ms"], lower_is_better=True)
    )
    print(f"interaction check of one pair: {figures['thesaurus_check_pair_us']} µs")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
