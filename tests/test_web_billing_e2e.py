"""Billing at the counter in a real browser: a live ``hygie serve`` on loopback with a TEST
site tariff, Debian's Chromium (Playwright, as in tests/test_web_e2e.py), and the virtual CPS
in the vpcd reader of the real pcscd. The pharmacist bills a done BPM step remotely, signs
the FSE with the card's PIN (a wrong PIN first: the tries left are shown), and sends the lot;
axe-core checks each billing screen."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.platform import open_platform
from tests.helpers_server import free_port, prepare_appliance, running_server, settings_for
from tests.identity_support import make_user, rpps
from tests.test_cards import Inserted, cps, vpcd_port
from tests.test_web_billing import AMO, WEB_TEST_TARIFF, fresh_nir
from tests.web.support import AXE, CHROMIUM, PHARMACIST, api_token, axe_violations, launch, login

__all__ = ["vpcd_port"]  # the pcscd fixture, imported to be shared

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian's chromium is not installed"),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="playwright is not installed"
    ),
    pytest.mark.skipif(not AXE.is_file(), reason="npm packages missing: run ./install.sh"),
]


@dataclass
class Live:
    base_url: str
    cycle_id: str
    log: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The appliance with one patient (NIR, AMO) whose adhesion and interview are done."""
    folder = tmp_path_factory.mktemp("webbilling-e2e")
    tariff = folder / "web-test-tariff.toml"
    tariff.write_text(WEB_TEST_TARIFF, encoding="utf-8")
    env = prepare_appliance(
        folder, HYGIE_BILLING_TARIFF_FILE=str(tariff), HYGIE_CARDS_READ_TIMEOUT_S="3"
    )
    platform = open_platform(settings_for(env))
    try:
        make_user(
            platform,
            PHARMACIST,
            "pharmacien_titulaire",
            display_name="Claire Martin",
            rpps_number=rpps(4242),
        )
    finally:
        platform.close()
    port = free_port()
    env["HYGIE_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    log = folder / "server.log"
    with running_server(env, log, port=port) as (_, base_url):
        headers = {"Authorization": f"Bearer {api_token(base_url)}"}
        today = date.today().isoformat()
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
            made = client.post(
                "/api/v1/patients",
                json={
                    "identity": {
                        "birth_family_name": "FACTURE",
                        "given_names": "Lucienne",
                        "birth_date": "1948-02-14",
                        "sex": "F",
                        "nir": fresh_nir(),
                    },
                    "coverage": {"amo": AMO},
                    "consents": [
                        {"kind": "bpm_adhesion", "status": "granted", "decided_on": today}
                    ],
                },
            )
            assert made.status_code == 201, made.text
            cycle = client.post(
                "/api/v1/bpm", json={"patient_id": made.json()["id"], "opened_on": today}
            ).json()
            version = cycle["version"]
            for kind in ("adhesion", "recueil"):
                done = client.post(
                    f"/api/v1/bpm/{cycle['id']}/steps",
                    json={"expected_version": version, "kind": kind, "performed_on": today},
                )
                assert done.status_code == 200, done.text
                version = done.json()["version"]
        yield Live(base_url=base_url, cycle_id=str(cycle["id"]), log=log)


def accessible(page: Any, where: str) -> None:
    violations = axe_violations(page)
    assert violations == [], f"{where}: {violations}"


def test_bill_then_sign_with_the_cps_pin_then_send_the_lot(live: Live, vpcd_port: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="fr-FR")
        context.set_default_timeout(15_000)
        try:
            page = context.new_page()
            cycle_page = f"/ui/bpm/{live.cycle_id}"
            login(page, live.base_url, target=cycle_page)
            assert page.get_by_role("heading", name="Facturation des étapes").is_visible()
            accessible(page, "cycle page with billing")

            page.get_by_label("À distance").check()
            page.get_by_role("button", name="Facturer l'étape « Entretien de recueil »").click()
            page.wait_for_load_state()
            notice = page.get_by_role("status")
            assert "créée (33,33" in notice.inner_text()
            assert page.get_by_text("— créée, 33,33").first.is_visible()

            page.get_by_role("link", name="Facturation", exact=True).click()
            page.wait_for_url("**/ui/billing")
            accessible(page, "billing page")
            with Inserted(vpcd_port, cps()):
                page.get_by_label("Code PIN CPS").fill("0000")
                page.get_by_role("button", name="Signer la FSE n° 1").click()
                alert = page.get_by_role("alert")
                alert.wait_for()
                assert "Code PIN incorrect : il reste 2 essais" in alert.inner_text()
                accessible(page, "billing page, wrong PIN")
                page.get_by_label("Code PIN CPS").fill("1234")
                page.get_by_role("button", name="Signer la FSE n° 1").click()
                page.get_by_text("FSE n° 1 signée.").wait_for()
            page.get_by_role("button", name="Constituer un lot").click()
            page.get_by_text("Lot n° 1 de 1 FSE mis en envoi.").wait_for()
            assert page.get_by_role("cell", name="envoyée").first.is_visible()
            accessible(page, "billing page after the lot")
        finally:
            context.close()
            browser.close()
    log = live.log.read_text(errors="replace")
    assert '"level": "error"' not in log, log[-3000:]
