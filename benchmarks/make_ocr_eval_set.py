"""Build the OCR evaluation set: synthetic prescription scans from real catalog names.

Run from the repository root:

    .venv/bin/python benchmarks/make_ocr_eval_set.py [--count 60] [--seed 8] \
        [--catalog /work/shared/data/bdpm-2025-07] [--out var/ocr-eval]

Writes ``--count`` clean and ``--count`` degraded prescriptions (2 × 60 = 120 images by
default) as PNG files with a ``truth.jsonl`` ground truth, under ``var/ocr-eval/`` (git-ignored:
generated, never committed; the same seed gives the same images). Products are marketed
oral specialities of the catalog (tablets, capsules, sachets) whose name carries a
strength; the catalog is imported into a throw-away appliance under ``OUT/appliance`` which
the benchmark reuses for matching.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from click.testing import CliRunner  # noqa: E402

from appliance.cli import main  # noqa: E402
from services.document_import import render_synthetic_prescription  # noqa: E402
from services.document_import.models import CatalogEntry  # noqa: E402

DEFAULT_CATALOG = Path("/work/shared/data/bdpm-2025-07")
ORAL_FORMS = ("comprimé", "gélule", "poudre pour solution buvable en sachet")


def appliance_env(home: Path) -> dict[str, str]:
    return {
        "HYGIE_ENV": "dev",
        "HYGIE_CONFIG_FILE": str(home / "hygie.toml"),
        "HYGIE_DATA_DIR": str(home / "data"),
        "HYGIE_KEY_DIR": str(home / "keys"),
        "HYGIE_MIN_FREE_DISK_MB": "1",
    }


def catalog_appliance(home: Path, catalog: Path) -> None:
    """A throw-away appliance under ``home`` with ``catalog`` imported (kept for reuse)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "hygie.toml").touch()
    os.environ.update(appliance_env(home))
    marker = home / "catalog.txt"
    if marker.exists() and marker.read_text() == str(catalog):
        return
    runner = CliRunner()
    for args in (["keys", "init"], ["db", "migrate"], ["catalog", "import", str(catalog)]):
        result = runner.invoke(main, args, catch_exceptions=False)
        if result.exit_code != 0 and "already" not in result.output:
            raise SystemExit(f"{' '.join(args)}: {result.output}")
    marker.write_text(str(catalog))


def catalog_entries() -> list[CatalogEntry]:
    from appliance.config import load_settings
    from appliance.platform import open_platform
    from services.document_import.store import catalog_entries as entries

    platform = open_platform(load_settings())
    try:
        return entries(platform.store)
    finally:
        platform.close()


def eligible(entry: CatalogEntry) -> bool:
    head = re.split(r",\s", entry.name, maxsplit=1)[0]
    return (
        bool(entry.cip13s)
        and any(entry.form.startswith(form) for form in ORAL_FORMS)
        and bool(re.search(r"\d", head))
        and len(head) <= 60
    )


def build(out: Path, catalog: Path, count: int, seed: int) -> Path:
    catalog_appliance(out / "appliance", catalog)
    pool = sorted((e for e in catalog_entries() if eligible(e)), key=lambda e: e.cis)
    rng = random.Random(seed)  # reproducible choice, not a secret
    out.mkdir(parents=True, exist_ok=True)
    truth_path = out / "truth.jsonl"
    with truth_path.open("w") as truth:
        for degraded in (False, True):
            for number in range(count):
                products = [(e.cis, e.name) for e in rng.sample(pool, rng.randint(2, 4))]
                scan = render_synthetic_prescription(
                    products, seed=rng.randrange(2**31), degraded=degraded
                )
                name = f"{'degraded' if degraded else 'clean'}-{number:03d}.png"
                (out / name).write_bytes(scan.png())
                record = {
                    "file": name,
                    "degraded": degraded,
                    "layout": scan.layout,
                    "font": scan.font,
                    "dpi": scan.dpi,
                    "prescriber": scan.prescriber,
                    "rpps": scan.rpps,
                    "patient": scan.patient,
                    "date": scan.prescribed_on.isoformat(),
                    "lines": [
                        {
                            "written": line.written,
                            "cis": line.cis,
                            "catalog_name": line.catalog_name,
                            "posology_text": line.posology.text,
                            "posology": {
                                "dose": line.posology.dose,
                                "unit": line.posology.unit,
                                "per_day": line.posology.per_day,
                                "times": list(line.posology.times) or None,
                                "duration_days": line.posology.duration_days,
                                "as_needed": line.posology.as_needed,
                            },
                        }
                        for line in scan.lines
                    ],
                }
                truth.write(json.dumps(record, ensure_ascii=False) + "\n")
    return truth_path


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60, help="images per condition")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "ocr-eval")
    args = parser.parse_args()
    truth = build(args.out, args.catalog, args.count, args.seed)
    print(f"{2 * args.count} images and their ground truth in {truth.parent}")


if __name__ == "__main__":
    main_()
