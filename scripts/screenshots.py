"""Screenshots of each main screen of the counter UI, for a reviewer to look at.

    .venv/bin/python scripts/screenshots.py [--out var/screenshots] [--tablet]

Starts a throw-away appliance (keys, databases, the mini BDPM catalogue, two accounts, one
patient on warfarin + aspirin + amiodarone) with ``hygie serve`` on loopback, drives Debian's
``/usr/bin/chromium`` with Playwright through the BPM workflow (login, search, patient,
enrolment, interview, analysis review, synthesis with a signed PDF, prescription import,
catalogue, admin) and saves one full-page PNG per screen at 1280×800 (``--tablet``: also
800×1280, a 10-inch tablet in portrait). Nothing of the real appliance in ``var/`` is
touched. Needs ``./install.sh --dev`` (npm packages, playwright).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.identity_support import PASSWORD  # noqa: E402
from tests.web.support import (  # noqa: E402
    COUMADINE,
    launch,
    live_appliance,
    login,
)


def shoot(page: Any, out: Path, name: str, tablet: bool) -> None:
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    if tablet:
        page.set_viewport_size({"width": 800, "height": 1280})
        page.screenshot(path=str(out / f"{name}-tablet.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 800})
    print(f"  {name}.png")


def run(out: Path, tablet: bool) -> None:
    from playwright.sync_api import sync_playwright

    from services.document_import.synthetic import render_synthetic_prescription

    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="hygie-shots-") as folder,
        live_appliance(Path(folder)) as app,
        sync_playwright() as playwright,
    ):
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="fr-FR")
        page.set_default_timeout(90_000)
        base = app.base_url
        page.goto(base + "/ui/")
        shoot(page, out, "01-login", tablet)
        login(page, base)
        shoot(page, out, "02-home", tablet)
        page.goto(base + "/ui/patients")
        page.get_by_label("Nom, date de naissance").press_sequentially("dura", delay=30)
        page.get_by_role("link", name="DURAND").wait_for()
        shoot(page, out, "03-patient-search", tablet)
        page.goto(base + f"/ui/patients/{app.patient_id}")
        shoot(page, out, "04-patient", tablet)
        page.goto(base + "/ui/patients/new")
        page.get_by_label("Date de naissance").fill("2999-01-01")
        page.get_by_role("button", name="Enregistrer").click()
        page.locator("#form-errors").wait_for()
        shoot(page, out, "05-patient-form-errors", tablet)
        page.goto(base + "/ui/bpm")
        shoot(page, out, "06-bpm-eligible", tablet)
        page.goto(base + f"/ui/patients/{app.patient_id}/bpm/enrol")
        shoot(page, out, "07-bpm-enrolment", tablet)
        page.get_by_label("Le patient a signé").check()
        page.get_by_role("button", name="Inscrire et ouvrir le bilan").click()
        page.get_by_role("heading", name="Entretien de recueil").wait_for()
        page.get_by_label("Vous arrive-t-il d'oublier").fill("Parfois le soir")
        shoot(page, out, "08-bpm-interview", tablet)
        page.get_by_role("button", name="Enregistrer l'étape « Entretien de recueil »").click()
        page.get_by_role("button", name="Analyser les traitements").click()
        page.locator("article.finding").first.wait_for()
        page.locator("article.finding").first.get_by_role(
            "button", name="Retenir", exact=True
        ).click()
        page.locator("article.finding.accepted").wait_for()
        shoot(page, out, "09-analysis-review", tablet)
        page.get_by_role("button", name="Valider l'analyse").click()
        page.get_by_role("link", name="Préparer, relire et signer la synthèse").click()
        page.get_by_label("Document", exact=True).select_option("synthesis")
        page.get_by_role("button", name="Générer").click()
        page.get_by_role("cell", name="non signé").wait_for()
        page.get_by_role("button", name="Signer").click()
        page.get_by_text("signé", exact=True).wait_for()
        shoot(page, out, "10-synthesis-documents", tablet)
        scan = render_synthetic_prescription(
            [(COUMADINE, "COUMADINE 5 mg, comprimé sécable")], seed=7, handwriting=False
        )
        path = Path(folder) / "ordonnance.png"
        path.write_bytes(scan.png())
        page.goto(base + "/ui/imports")
        shoot(page, out, "11-import", tablet)
        page.set_input_files("#f-file", str(path))
        page.get_by_role("button", name="Lire l'ordonnance").click()
        page.wait_for_url("**/ui/imports/*-*")
        shoot(page, out, "12-import-review", tablet)
        page.goto(base + "/ui/medications?q=amiodarone")
        shoot(page, out, "13-catalogue-search", tablet)
        page.goto(base + f"/ui/medications/{COUMADINE}")
        shoot(page, out, "14-product", tablet)
        page.goto(base + "/ui/admin")
        shoot(page, out, "15-admin", tablet)
        page.goto(base + "/ui/admin/audit")
        shoot(page, out, "16-audit", tablet)
        page.goto(base + "/ui/account")
        page.get_by_label("Nouveau code PIN").fill("2468")
        page.get_by_label("Mot de passe actuel").fill(PASSWORD)
        page.get_by_role("button", name="Enregistrer le code PIN").click()
        page.get_by_role("button", name="Changer d'utilisateur").click()
        page.wait_for_url("**/oauth/authorize**")
        shoot(page, out, "17-pin-switch", tablet)
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "screenshots")
    parser.add_argument("--tablet", action="store_true", help="also 800×1280 screenshots")
    args = parser.parse_args()
    print(f"screenshots into {args.out}")
    run(args.out, args.tablet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
