"""The counter UI end to end, in Debian's Chromium driven by Playwright, against a live
``hygie serve`` on loopback (one server and one browser for the module).

The tests run in file order and share the browser context (one signed-in pharmacist), the way
a counter terminal is used: log in, find a patient, enrol her in the BPM, record the
interview, run the analysis and accept a finding, validate it, search the catalogue with a
scanned DataMatrix, look at the admin pages; then the session's expiry and the logout. axe-core
checks every main page for serious or critical WCAG 2.1 A/AA violations.
"""

from __future__ import annotations

import importlib.util
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_server import run_cli, start_process, stop_process
from tests.identity_support import PASSWORD
from tests.web.support import (
    AXE,
    CHROMIUM,
    COUMADINE_CIP13,
    MINI_CATALOG,
    PATIENT_NAME,
    Appliance,
    axe_violations,
    dump,
    launch,
    live_appliance,
    login,
)

STATE: dict[str, str] = {}
"""What a test leaves for the next one (the BPM cycle's page)."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian's chromium is not installed"),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="playwright is not installed"
    ),
    pytest.mark.skipif(not AXE.is_file(), reason="npm packages missing: run ./install.sh"),
]


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    with live_appliance(tmp_path_factory.mktemp("web")) as running:
        yield running


@pytest.fixture(scope="module")
def browser_context(appliance: Appliance) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="fr-FR")
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            context.close()
            browser.close()


@pytest.fixture(scope="module")
def page(browser_context: Any) -> Any:
    return browser_context.new_page()


def accessible(page: Any, where: str) -> None:
    violations = axe_violations(page)
    assert violations == [], f"{where}: {dump(violations)}"


def test_login_by_authorization_code_lands_on_the_asked_page(
    appliance: Appliance, page: Any
) -> None:
    page.goto(appliance.base_url + "/ui/patients")
    assert "/oauth/authorize" in page.url  # no session: straight to the login page
    accessible(page, "login page")
    login(page, appliance.base_url, target="/ui/patients")
    assert page.url.endswith("/ui/patients")
    assert page.get_by_text("Claire Martin").is_visible()
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["hygie_session"]
    assert session["httpOnly"]
    assert session["sameSite"] == "Lax"
    assert session["path"] == "/ui"
    accessible(page, "patients page")


def test_search_as_you_type_then_patient_page(appliance: Appliance, page: Any) -> None:
    page.goto(appliance.base_url + "/ui/patients")
    page.get_by_label("Nom, date de naissance").press_sequentially("dura", delay=30)
    link = page.get_by_role("link", name=PATIENT_NAME)
    link.wait_for()  # the results came by htmx, without a page load
    link.click()
    page.wait_for_url(f"**/ui/patients/{appliance.patient_id}")
    for heading in ("Identité", "Couverture", "Pathologies et allergies", "Biologie et mesures"):
        assert page.get_by_role("heading", name=heading).is_visible()
    assert page.get_by_text("Fibrillation auriculaire").is_visible()
    assert page.get_by_role("heading", name="Historique des délivrances").is_visible()
    assert page.get_by_text("Éligible au BPM", exact=True).is_visible()
    assert page.get_by_text("COUMADINE 5 mg").first.is_visible()  # catalogue names, not CIS
    accessible(page, "patient page")


def test_patient_form_shows_the_api_messages_next_to_the_fields(
    appliance: Appliance, page: Any
) -> None:
    page.goto(appliance.base_url + "/ui/patients/new")
    page.get_by_label("Nom de naissance").fill("MOREAU")
    page.get_by_label("Prénoms (tous").fill("Louis")
    page.get_by_label("Date de naissance").fill("2999-01-01")
    page.get_by_label("Sexe").select_option("M")
    page.get_by_label("NIR (15 caractères").fill("1234")
    page.get_by_role("button", name="Enregistrer").click()
    birth = page.locator("#e-identity-birth_date")
    assert "futur" in birth.inner_text()
    assert page.locator("#f-identity-birth_date").get_attribute("aria-invalid") == "true"
    assert "NIR" in page.locator("#e-identity-nir").inner_text()
    accessible(page, "patient form with errors")
    page.get_by_label("Date de naissance").fill("1951-06-02")
    page.get_by_label("NIR (15 caractères").fill("")
    page.get_by_role("button", name="Enregistrer").click()
    page.get_by_role("heading", name="MOREAU Louis").wait_for()


def test_bpm_enrolment_interview_analysis_and_accepted_finding(
    appliance: Appliance, page: Any
) -> None:
    page.goto(appliance.base_url + "/ui/bpm")
    accessible(page, "BPM eligible list")
    page.goto(appliance.base_url + f"/ui/patients/{appliance.patient_id}/bpm/enrol")
    page.get_by_role("button", name="Inscrire et ouvrir le bilan").click()
    assert "obligatoire" in page.locator("#e-consent").inner_text()  # consent not ticked
    page.get_by_label("Le patient a signé").check()
    page.get_by_role("button", name="Inscrire et ouvrir le bilan").click()
    page.wait_for_url("**/ui/bpm/*")
    page.get_by_role("heading", name="Entretien de recueil").wait_for()
    accessible(page, "BPM cycle (interview)")
    page.get_by_label("Vous arrive-t-il d'oublier").fill("Parfois le soir")
    page.get_by_label("Mode de vie").fill("Marche tous les jours")
    page.get_by_label("Code CIM-10 1").fill("E11")
    page.get_by_label("Libellé 1").fill("Diabète de type 2")
    page.get_by_role("button", name="Enregistrer l'étape « Entretien de recueil »").click()
    page.get_by_role("heading", name="Analyse des traitements").wait_for()
    page.goto(appliance.base_url + f"/ui/patients/{appliance.patient_id}")
    assert page.get_by_role("cell", name="Diabète de type 2").is_visible()  # on the record
    page.go_back()

    page.get_by_role("button", name="Analyser les traitements").click()
    page.wait_for_url("**/ui/analyses/**")
    first = page.locator("article.finding").first
    first.wait_for()
    assert page.locator("section.card h2").count() >= 1  # grouped by severity
    assert "Source" in page.locator("article.finding .source").first.inner_text()
    accessible(page, "analysis review")
    title = first.locator("h3").inner_text()
    first.get_by_role("button", name="Retenir", exact=True).click()
    accepted = page.locator("article.finding.accepted")
    accepted.wait_for()  # the finding was swapped in place by htmx
    assert accepted.locator("h3").inner_text() == title
    assert "retenue" in accepted.locator(".status").inner_text()
    page.get_by_label("Nouvelle proposition").fill("Réévaluer l'aspirine avec le cardiologue")
    page.get_by_role("button", name="Ajouter la proposition").click()
    page.locator("#proposal-list", has_text="cardiologue").wait_for()
    page.get_by_role("button", name="Valider l'analyse").click()
    page.wait_for_url("**/ui/bpm/*")
    STATE["cycle_url"] = page.url
    done = page.locator("li.step.done", has_text="Analyse des traitements")
    done.get_by_text("Notes").click()
    notes = done.locator("pre.notes").inner_text()
    assert "[Retenue]" in notes
    assert "cardiologue" in notes


def test_bpm_next_step_is_planned_for_a_date_the_pharmacist_chooses(
    appliance: Appliance, page: Any
) -> None:
    from datetime import date, timedelta

    page.goto(STATE["cycle_url"])
    due = date.today() + timedelta(days=7)
    page.get_by_label("Étape", exact=True).select_option("transmission")
    page.get_by_label("Date prévue").fill(due.isoformat())
    page.get_by_role("button", name="Planifier", exact=True).click()
    row = page.locator("table.follow-ups tr", has_text="Transmission au médecin")
    row.wait_for()
    assert due.strftime("%d/%m/%Y") in row.inner_text()
    assert "à faire" in row.inner_text()
    accessible(page, "BPM cycle (planned steps)")


def test_synthesis_is_generated_signed_and_downloaded(appliance: Appliance, page: Any) -> None:
    page.goto(STATE["cycle_url"])
    page.get_by_role("link", name="Préparer, relire et signer la synthèse").click()
    page.wait_for_url("**/synthesis")
    accessible(page, "synthesis")
    page.get_by_role("button", name="Demander un brouillon").click()
    page.wait_for_url("**/synthesis")
    page.get_by_text("Rédaction en cours par les modèles locaux").wait_for()
    page.get_by_text("(en attente)").wait_for()  # htmx polled the queued job
    worker = start_process(appliance.env, appliance.log.with_name("worker.log"), "worker")
    try:  # the embedded SmolLM2 drafts on the CPU; the page polls until the job is done
        verdict = page.locator("#draft p.ok, #draft p.error")
        verdict.wait_for(timeout=240_000)
    finally:
        stop_process(worker, signal.SIGTERM)
    # Either the draft passed the checks (shown, editable) or none did (nothing shown).
    assert page.get_by_text("Contrôles (").is_visible()
    if "Brouillon validé" in verdict.inner_text():
        assert page.get_by_label("Texte de la synthèse (modifiable)").input_value()
    page.get_by_label("Document", exact=True).select_option("synthesis")
    page.get_by_label("Format", exact=True).select_option("pdf")
    page.get_by_role("button", name="Générer").click()
    page.get_by_role("cell", name="non signé").wait_for()
    page.get_by_role("button", name="Signer").click()
    signed = page.locator("tr", has=page.get_by_text("signé", exact=True))
    signed.wait_for()
    with page.expect_download() as info:
        signed.get_by_role("link", name="Télécharger").click()
    content = Path(info.value.path()).read_bytes()
    assert content.startswith(b"%PDF")
    assert b"/ByteRange" in content  # a PAdES signature dictionary
    accessible(page, "synthesis with documents")
    page.get_by_role("button", name="Enregistrer la transmission").click()
    page.wait_for_url(STATE["cycle_url"])
    assert page.locator("li.step.done", has_text="Transmission au médecin").is_visible()


def test_scan_import_is_reviewed_beside_the_image_and_validated(
    appliance: Appliance, page: Any, tmp_path: Path
) -> None:
    from services.document_import.synthetic import render_synthetic_prescription

    scan = render_synthetic_prescription(
        [("63245753", "COUMADINE 5 mg, comprimé sécable")],
        seed=7,
        degraded=False,
        handwriting=False,
    )
    path = tmp_path / "ordonnance.png"
    path.write_bytes(scan.png())
    page.goto(appliance.base_url + f"/ui/patients/{appliance.patient_id}")
    before = page.locator("section[aria-labelledby=h-treatments] tbody tr").count()
    page.goto(appliance.base_url + "/ui/imports")
    accessible(page, "import page")
    page.set_input_files("#f-file", str(path))
    page.get_by_role("button", name="Lire l'ordonnance").click()
    page.wait_for_url("**/ui/imports/*-*", timeout=90_000)
    assert page.get_by_role("img", name="Page 1 de l'ordonnance scannée").is_visible()
    assert "COUMADINE" in page.locator("#l0-label").input_value()
    accessible(page, "import review")
    page.get_by_label("Rechercher le dossier").press_sequentially("durand", delay=30)
    page.locator(f"#f-patient_id option[value='{appliance.patient_id}']").wait_for(state="attached")
    page.get_by_label("Dossier patient").select_option(appliance.patient_id)
    if not page.get_by_label("Date de prescription").input_value():
        page.get_by_label("Date de prescription").fill(scan.prescribed_on.isoformat())
    page.get_by_role("button", name="Valider l'ordonnance").click()
    page.wait_for_url(f"**/ui/patients/{appliance.patient_id}")
    after = page.locator("section[aria-labelledby=h-treatments] tbody tr").count()
    assert after == before + 1


def test_catalogue_opens_the_product_of_a_scanned_datamatrix(
    appliance: Appliance, page: Any
) -> None:
    page.goto(appliance.base_url + "/ui/medications")
    accessible(page, "catalogue search")
    scan = f"010{COUMADINE_CIP13}17270331" + "10LOT42"
    page.get_by_label("Nom, substance (DCI), CIS").fill(scan)
    page.get_by_label("Nom, substance (DCI), CIS").press("Enter")
    page.wait_for_url("**/ui/medications/63245753")
    assert "COUMADINE" in page.get_by_role("heading", level=1).inner_text()
    assert page.get_by_role("heading", name="Ruptures et tensions").is_visible()
    accessible(page, "product page")


def test_admin_pages(appliance: Appliance, page: Any) -> None:
    page.goto(appliance.base_url + "/ui/admin")
    assert page.get_by_role("heading", name="État du système").is_visible()
    assert page.get_by_role("cell", name="lucas", exact=True).is_visible()
    accessible(page, "admin")
    page.get_by_role("link", name="Rechercher dans le journal d'audit").click()
    page.get_by_label("Action").fill("read")
    page.get_by_role("button", name="Filtrer").click()
    assert page.locator("table.list tbody tr").count() >= 1
    accessible(page, "audit search")


def test_tablet_layout_keeps_the_navigation_usable(appliance: Appliance, page: Any) -> None:
    page.set_viewport_size({"width": 800, "height": 1280})  # 10-inch tablet, portrait
    try:
        page.goto(appliance.base_url + f"/ui/patients/{appliance.patient_id}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 800, f"horizontal scroll on a tablet: {width}px"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Aller au contenu"
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})


def test_quick_user_switch_with_a_pin(appliance: Appliance, page: Any) -> None:
    page.goto(appliance.base_url + "/ui/account")
    page.get_by_label("Nouveau code PIN").fill("2468")
    page.get_by_label("Mot de passe actuel").fill(PASSWORD)
    page.get_by_role("button", name="Enregistrer le code PIN").click()
    page.get_by_text("Code PIN enregistré").wait_for()
    accessible(page, "account")
    page.get_by_role("button", name="Changer d'utilisateur").click()
    page.wait_for_url("**/oauth/authorize**")
    page.get_by_label("Claire Martin").fill("2468")
    page.get_by_role("button", name="Reprendre la session").click()
    page.wait_for_url("**/ui/")
    assert page.get_by_role("heading", name="Bonjour Claire Martin").is_visible()


def test_demo_pharmacy_lists_its_eligible_patients(appliance: Appliance, page: Any) -> None:
    """``hygie demo load`` (the "done when" path) into this running appliance."""
    loaded = run_cli(
        appliance.env,
        "demo",
        "load",
        "--catalog",
        str(MINI_CATALOG),
        "--scans",
        "0",
        "--force",  # the store already holds this module's test patients
        timeout=180,
    )
    assert loaded.returncode == 0, loaded.stderr + loaded.stdout
    page.goto(appliance.base_url + "/ui/bpm")
    rows = page.locator("table.list tbody tr")
    assert rows.count() >= 20  # the demo's 20 eligible patients (DURAND is enrolled)
    page.get_by_role("link", name="Inscrire").first.wait_for()


def test_expired_session_returns_to_login_with_the_target_kept(
    appliance: Appliance, page: Any, browser_context: Any
) -> None:
    target = f"/ui/patients/{appliance.patient_id}"
    browser_context.add_cookies(
        [{"name": "hygie_session", "value": "x" * 43, "domain": "127.0.0.1", "path": "/ui"}]
    )
    page.goto(appliance.base_url + target)
    assert "/ui/login" in page.url
    assert page.get_by_text("Votre session a expiré").is_visible()
    login(page, appliance.base_url, target=target)
    assert page.url.endswith(target)


def test_forms_without_the_csrf_token_are_refused(appliance: Appliance, page: Any) -> None:
    answer = page.request.post(
        appliance.base_url + f"/ui/patients/{appliance.patient_id}/analysis",
        form={"cycle_id": ""},
        max_redirects=0,
    )
    assert answer.status == 403


def test_logout_revokes_the_session(appliance: Appliance, page: Any) -> None:
    page.goto(appliance.base_url + "/ui/")
    page.get_by_role("button", name="Se déconnecter").click()
    page.wait_for_url("**/ui/login?reason=logout")
    assert page.get_by_text("Vous êtes déconnecté").is_visible()
    page.goto(appliance.base_url + "/ui/patients")
    assert "/oauth/authorize" in page.url or "/ui/login" in page.url


def test_server_log_has_no_error(appliance: Appliance) -> None:
    log = Path(appliance.log).read_text(errors="replace")
    assert '"level": "error"' not in log, log[-3000:]
