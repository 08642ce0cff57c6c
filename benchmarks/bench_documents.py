"""Document generation benchmark: a 2-page synthesis PDF and a 10,000-row CSV export.

Targets from the design note (issue 8): PDF < 20 ms, CSV export < 50 ms. Prints p50 and
p99 (wall clock and process CPU time) and the ratio to each target. The PDF is the real
synthesis template (pharmacy header, 9 treatment lines, 4 findings with sources and
answer boxes, PDF/A metadata, embedded DejaVu fonts) rendered by the same code the API
uses; the CSV goes through the same ``logic.to_csv`` as the export routes (rows built in
memory, so the figure is the serialisation, not the store read, which is reported apart).

    .venv/bin/python benchmarks/bench_documents.py [--runs 60]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pdfplumber

from services.documents import logic, render
from services.documents.models import DocumentModel, PatientInfo, Pharmacy

PDF_TARGET_MS = 20.0
CSV_TARGET_MS = 50.0
TODAY = date(2026, 11, 25)


def synthesis_model() -> DocumentModel:
    pharmacy = Pharmacy(
        name="Pharmacie du Centre",
        address_lines=("1 rue de la Paix", "75001 Paris"),
        finess="750000001",
        phone="01 23 45 67 89",
    )
    patient = PatientInfo(
        family_name="DUPONT",
        given_names="Jeanne Marie",
        birth_date=date(1940, 3, 2),
        sex="F",
        gp_name="Dr Martin",
        gp_rpps="10000000009",
    )
    names = [
        ("DOLIPRANE 1000 mg, comprimé", "PARACÉTAMOL"),
        ("KARDEGIC 75 mg, poudre", "ACIDE ACÉTYLSALICYLIQUE"),
        ("METFORMINE 850 mg, comprimé", "METFORMINE"),
        ("AMLODIPINE 5 mg, gélule", "AMLODIPINE"),
        ("RAMIPRIL 5 mg, comprimé", "RAMIPRIL"),
        ("ATORVASTATINE 20 mg, comprimé", "ATORVASTATINE"),
        ("OMEPRAZOLE 20 mg, gélule", "OMÉPRAZOLE"),
        ("LEVOTHYROX 75 µg, comprimé", "LÉVOTHYROXINE"),
        ("ZOLPIDEM 10 mg, comprimé", "ZOLPIDEM"),
        ("FUROSEMIDE 40 mg, comprimé", "FUROSÉMIDE"),
    ]
    times = (("morning",), ("morning", "evening"), ("bedtime",), ("morning", "noon", "evening"))
    treatments = [
        logic.treatment_row(
            product=product,
            dci=dci,
            dose=1,
            unit="comprimé",
            times_per_day=len(times[i % 4]),
            times_of_day=times[i % 4],
            as_needed=False,
            duration=None,
            original_text=None,
            since=TODAY - timedelta(days=40 * i),
        )
        for i, (product, dci) in enumerate(names)
    ]
    severities = ("contraindication", "avoid", "precaution", "consider", "high", "moderate")
    findings = [
        logic.finding_item(
            "interaction" if i % 2 else "stopp",
            f"ANSM 2023-09: {names[i][1]} + {names[i + 1][1]}" if i % 2 else f"STOPP D{i}",
            severities[i % len(severities)],
            "Association à surveiller : risque majoré d'effets indésirables chez le sujet âgé, "
            "en particulier en cas d'insuffisance rénale.",
            "Parlez-en à votre médecin avant toute modification.",
            "Réévaluer l'indication et, si elle persiste, adapter la posologie à la fonction "
            "rénale (clairance de la créatinine).",
            {"thesaurus": {"edition": "2023-09", "pages": [100 + i]}}
            if i % 2
            else {"source": "STOPP/START v3 (O'Mahony et al., 2023)"},
            {},
        )
        for i in range(4)
    ]
    return logic.synthesis(
        pharmacy,
        patient,
        treatments,
        findings,
        [("STOPP C3", ["DFG"])],
        synthesis_text=logic.engine_synthesis(findings),
        synthesis_from_llm=False,
        pharmacist="Pharmacien titulaire",
        today=TODAY,
    )


def csv_rows(count: int) -> list[tuple[object, ...]]:
    statuses = ("in_progress", "completed", "abandoned")
    return [
        (
            f"{i:08x}-0000-4000-8000-000000000000",
            f"NOM{i}",
            "Prénom Composé",
            date(1930 + i % 60, 1 + i % 12, 1 + i % 28),
            1 + i % 3,
            statuses[i % 3],
            TODAY - timedelta(days=i % 365),
            "recueil",
            TODAY - timedelta(days=i % 300),
            "analyse",
            "",
            "",
        )
        for i in range(count)
    ]


def measure(run: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    run()  # warm-up: font registration, template cache, ICC profile
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        run()
        walls.append((time.perf_counter() - w0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return walls, cpus


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, walls: list[float], cpus: list[float], target: float) -> None:
    p50, p99 = statistics.median(walls), pct(walls, 0.99)
    c50, c99 = statistics.median(cpus), pct(cpus, 0.99)
    verdict = "met" if p50 < target else "MISSED"
    print(
        f"{name:<34} wall p50 {p50:8.2f} ms  p99 {p99:8.2f} ms | CPU p50 {c50:8.2f} ms  "
        f"p99 {c99:8.2f} ms | target < {target:.0f} ms: p50 ratio {p50 / target:.2f}x "
        f"({verdict}), CPU p50 ratio {c50 / target:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    model = synthesis_model()
    pdf = render.render_pdf(model)
    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        pages = len(doc.pages)
    print(f"synthesis PDF: {pages} pages, {len(pdf) / 1024:.0f} KiB")
    report(
        "synthesis PDF (render)",
        *measure(lambda: render.render_pdf(model), args.runs),
        PDF_TARGET_MS,
    )
    report(
        "synthesis PDF (compose + render)",
        *measure(lambda: render.render_pdf(synthesis_model()), args.runs),
        PDF_TARGET_MS,
    )
    report("synthesis DOCX", *measure(lambda: render.render_docx(model), args.runs), PDF_TARGET_MS)
    report("synthesis HTML", *measure(lambda: render.render_html(model), args.runs), PDF_TARGET_MS)
    rows = csv_rows(10_000)
    data = logic.to_csv(logic.BPM_STATUS_COLUMNS, rows, text_columns=logic.BPM_STATUS_TEXT)
    print(f"CSV export: 10,000 rows, {len(data) / 1024:.0f} KiB")
    report(
        "CSV 10,000 rows",
        *measure(
            lambda: logic.to_csv(
                logic.BPM_STATUS_COLUMNS, rows, text_columns=logic.BPM_STATUS_TEXT
            ),
            args.runs,
        ),
        CSV_TARGET_MS,
    )


if __name__ == "__main__":
    main()
