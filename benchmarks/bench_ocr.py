"""Prescription OCR figures: line-level product match and posology accuracy on clean and
degraded synthetic scans, and the time per page on one core.

Run from the repository root (builds the evaluation set first when it is missing):

    .venv/bin/python benchmarks/bench_ocr.py [--count 60] [--seed 8] [--json FILE]

Each scan goes through the same path as ``hygie prescriptions extract``
(``extract_bytes``: decoding, preprocessing, Tesseract ``fra``, extraction, catalog match on
the full BDPM catalog). The process is pinned to one CPU and Tesseract to one thread.

* product match, strict: the line's CIS is the one the generator wrote;
* product match, as written: the matched speciality has the written name and strength
  (several CIS share them, differing by a form the prescriber did not write, e.g.
  « comprimé » vs « comprimé pelliculé »): the goal is measured on this one;
* posology: dose, unit, intakes per day, times of day, duration in days and « si besoin »
  all equal to the template's meaning (a line not found counts as wrong).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ["OMP_THREAD_LIMIT"] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

from benchmarks.make_ocr_eval_set import (  # noqa: E402
    DEFAULT_CATALOG,
    build,
    catalog_appliance,
)
from services.document_import import extract_bytes  # noqa: E402
from services.document_import.logic import fold  # noqa: E402

GOALS = {"clean_match": 0.95, "degraded_match": 0.85, "s_per_page": 2.0}


def _head(name: str) -> str:
    return fold(re.split(r",\s", name, maxsplit=1)[0])


def _posology_ok(found: dict[str, Any], truth: dict[str, Any]) -> bool:
    for key in ("dose", "per_day", "duration_days"):
        a, b = found.get(key), truth.get(key)
        if (a is None) != (b is None) or (a is not None and abs(float(a) - float(b)) > 1e-6):
            return False
    return (
        found.get("unit") == truth.get("unit")
        and (found.get("times") or None) == (truth.get("times") or None)
        and bool(found.get("as_needed")) == bool(truth.get("as_needed"))
    )


def evaluate(folder: Path) -> dict[str, Any]:
    from appliance.config import load_settings
    from appliance.platform import open_platform

    platform = open_platform(load_settings())
    names: dict[str, str] = {}
    fonts: dict[str, list[int]] = {}
    records = [json.loads(line) for line in (folder / "truth.jsonl").read_text().splitlines()]
    stats: dict[str, dict[str, Any]] = {
        kind: {
            "lines": 0,
            "strict": 0,
            "written": 0,
            "posology": 0,
            "returned": 0,
            "wrong": 0,
            "times": [],
            "cpu": [],
            "failures": [],
        }
        for kind in ("clean", "degraded")
    }
    try:
        from services.document_import.store import catalog_index

        index = catalog_index(platform.store)
        names = {entry.cis: entry.name for entry in index.entries}
        # First call builds the index; warm Tesseract once too (not counted).
        extract_bytes(platform.store, (folder / records[0]["file"]).read_bytes(), "warm-up")
        for record in records:
            kind = "degraded" if record["degraded"] else "clean"
            font = fonts.setdefault(f"{kind} {record['font']}", [0, 0])
            data = (folder / record["file"]).read_bytes()
            started, cpu = time.perf_counter(), _cpu()
            result = msgspec_builtins(extract_bytes(platform.store, data, record["file"]))
            stats[kind]["times"].append(time.perf_counter() - started)
            stats[kind]["cpu"].append(_cpu() - cpu)
            lines = result["lines"]
            heads = {_head(t["catalog_name"]) for t in record["lines"]}
            for found in lines:
                if found["cis"]:
                    stats[kind]["returned"] += 1
                    if _head(names.get(found["cis"], "")) not in heads:
                        stats[kind]["wrong"] += 1  # a CIS the prescription does not name
            for truth in record["lines"]:
                stats[kind]["lines"] += 1
                expected_head = _head(truth["catalog_name"])
                hit = next((x for x in lines if x["cis"] == truth["cis"]), None)
                same = hit or next(
                    (
                        x
                        for x in lines
                        if x["cis"] and _head(names.get(x["cis"], "")) == expected_head
                    ),
                    None,
                )
                if hit:
                    stats[kind]["strict"] += 1
                font[0] += 1
                if same:
                    font[1] += 1
                    stats[kind]["written"] += 1
                    if _posology_ok(same["posology"], truth["posology"]):
                        stats[kind]["posology"] += 1
                    elif len(stats[kind]["failures"]) < 8:
                        stats[kind]["failures"].append(
                            f"posology {truth['posology_text']!r} read {same['text']!r} "
                            f"-> {same['posology']}"
                        )
                elif len(stats[kind]["failures"]) < 8:
                    stats[kind]["failures"].append(
                        f"product {truth['written']!r} ({record['file']}) -> "
                        f"{[(x['text'][:50], x['cis']) for x in lines]}"
                    )
    finally:
        platform.close()
    report: dict[str, Any] = {
        "by_font": {
            k: {"lines": v[0], "match_as_written": round(v[1] / v[0], 4)} for k, v in fonts.items()
        }
    }
    for kind, s in stats.items():
        times = sorted(s["times"])
        report[kind] = {
            "images": len(times),
            "lines": s["lines"],
            "match_strict": round(s["strict"] / s["lines"], 4) if s["lines"] else None,
            "match_as_written": round(s["written"] / s["lines"], 4) if s["lines"] else None,
            "posology": round(s["posology"] / s["lines"], 4) if s["lines"] else None,
            "cis_returned": s["returned"],
            "cis_wrong": s["wrong"],
            "s_per_page_p50": round(statistics.median(times), 3) if times else None,
            "s_per_page_p95": round(times[int(0.95 * (len(times) - 1))], 3) if times else None,
            "s_per_page_max": round(times[-1], 3) if times else None,
            "cpu_s_per_page_p50": round(statistics.median(s["cpu"]), 3) if s["cpu"] else None,
            "cpu_s_per_page_p95": round(sorted(s["cpu"])[int(0.95 * (len(s["cpu"]) - 1))], 3)
            if s["cpu"]
            else None,
            "failures": s["failures"],
        }
    return report


def _cpu() -> float:
    """CPU seconds of this process and its finished children (Tesseract runs in a child):
    the machine's load does not inflate it as it does wall time."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def msgspec_builtins(value: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60, help="images per condition")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "ocr-eval")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    truth = args.out / "truth.jsonl"
    if not truth.exists() or sum(1 for _ in truth.open()) != 2 * args.count:
        build(args.out, args.catalog, args.count, args.seed)
    catalog_appliance(args.out / "appliance", args.catalog)
    report = evaluate(args.out)
    print(f"OCR evaluation set: {args.out} (seed {args.seed}, catalog {args.catalog.name})")
    print(
        f"CPU: 1 core pinned of {os.cpu_count()}, Tesseract OMP_THREAD_LIMIT=1, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    for kind in ("clean", "degraded"):
        r = report[kind]
        goal = GOALS[f"{kind}_match"]
        print(
            f"{kind:9s} images {r['images']:3d} lines {r['lines']:4d}  "
            f"match strict {r['match_strict']:.1%}  as written {r['match_as_written']:.1%} "
            f"(goal {goal:.0%}, ratio {r['match_as_written'] / goal:.2f})  "
            f"posology {r['posology']:.1%}  s/page p50 {r['s_per_page_p50']:.2f} "
            f"p95 {r['s_per_page_p95']:.2f} max {r['s_per_page_max']:.2f}  "
            f"CPU s/page p50 {r['cpu_s_per_page_p50']:.2f} p95 {r['cpu_s_per_page_p95']:.2f} "
            f"(goal ≤ {GOALS['s_per_page']:.0f} s, ratio wall "
            f"{r['s_per_page_p50'] / GOALS['s_per_page']:.2f} / CPU "
            f"{r['cpu_s_per_page_p50'] / GOALS['s_per_page']:.2f})"
        )
        print(
            f"{'':9s} CIS returned {r['cis_returned']}, of a product the prescription does "
            f"not name: {r['cis_wrong']}"
        )
        for failure in r["failures"]:
            print(f"    {failure}")
    for name, figures in sorted(report["by_font"].items()):
        print(f"  {name:38s} lines {figures['lines']:4d}  match {figures['match_as_written']:.1%}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
