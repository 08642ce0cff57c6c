"""Cards API and CPS login, in-process (Litestar TestClient) against the real pcscd + vpcd.

The pcscd and virtual cards come from ``tests/test_cards.py``'s fixtures; the app is the
cards, identity, workstations and patients services of the real composition.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.cli import main
from appliance.config import load_settings
from appliance.platform import Platform
from drivers.cps_vitale.virtual import VirtualCard, parse_card
from services.cards import PLUGIN as CARDS
from services.identity import PLUGINS as IDENTITY
from services.identity.cards import (
    DEVICE_COOKIE,
    device_hash,
    register_card_authenticator,
    terminal_id,
)
from services.patients import PLUGIN as PATIENTS
from services.workstations import PLUGIN as WORKSTATIONS
from tests.conftest import hygie_env
from tests.identity_support import (
    app_platform,
    audit_actions,
    bearer,
    code_from,
    exchange,
    make_user,
    rpps,
    start,
    submit,
)
from tests.test_cards import JEANNE, LEO, READER, Inserted, vitale
from tests.test_cards import vpcd_port as vpcd_port  # the module's pcscd fixture
from tests.test_web_routes import csrf_of, signed_in

CPS_RPPS = rpps(4242)


def cps_card() -> VirtualCard:
    holder = {
        "surname": "DURAND",
        "first_name": "CLAIRE",
        "rpps": CPS_RPPS,
        "profession": "Pharmacien",
    }
    return parse_card("cps", {"holder": holder, "pin": "1234"})


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, vpcd_port: int) -> Iterator[TestClient[Any]]:
    tmp_path: Path = tmp_path_factory.mktemp("cards-api")
    (tmp_path / "hygie.toml").write_text("# test configuration\n")
    values = hygie_env(tmp_path)
    cleared: dict[str, str | None] = {
        key: None
        for key in os.environ
        if key.startswith("HYGIE_") or key == "CREDENTIALS_DIRECTORY"
    }
    runner = CliRunner()
    for args in (["keys", "init"], ["db", "migrate"]):
        result = runner.invoke(main, args, env={**cleared, **values}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    settings = load_settings(values).model_copy(
        update={"cards_cps_login": True, "cards_reader": READER}
    )
    app = create_app(settings, plugins=(*IDENTITY, WORKSTATIONS, PATIENTS, CARDS))
    try:
        with TestClient(app) as test_client:
            yield test_client
    finally:
        register_card_authenticator(None)


def token(client: TestClient[Any], *scopes: str) -> dict[str, str]:
    platform: Platform = app_platform(client)
    assert platform.tokens is not None
    issued = platform.tokens.issue(
        subject="user-cards", role="pharmacien_titulaire", scopes=list(scopes)
    )
    return bearer(issued)


def test_readers_need_the_cards_scope(client: TestClient[Any]) -> None:
    assert client.get("/api/v1/cards/readers").status_code == 401
    assert (
        client.get("/api/v1/cards/readers", headers=token(client, "patients:read")).status_code
        == 403
    )
    answer = client.get("/api/v1/cards/readers", headers=token(client, "cards:read"))
    assert answer.status_code == 200
    assert READER in [r["name"] for r in answer.json()["readers"]]


def test_vitale_read_fills_the_patient_form_and_is_audited(
    client: TestClient[Any], vpcd_port: int
) -> None:
    headers = token(client, "cards:read", "patients:write", "patients:read")
    with Inserted(vpcd_port, vitale(JEANNE)):
        first = client.post("/api/v1/cards/read", json={}, headers=headers)
        assert first.status_code == 200, first.text
        card = first.json()
        assert card["type"] == "vitale"
        (person,) = card["beneficiaries"]
        assert {k: person[k] for k in JEANNE} == JEANNE
        assert person["patient_id"] is None
        created = client.post("/api/v1/patients", json=person["form"], headers=headers)
        assert created.status_code == 201, created.text
        patient_id = created.json()["id"]
        again = client.post("/api/v1/cards/read", json={"reader": READER}, headers=headers)
    assert again.json()["beneficiaries"][0]["patient_id"] == patient_id
    reads = [entry for entry in audit_actions(app_platform(client)) if entry[0] == "vitale.read"]
    assert reads[-2:] == [("vitale.read", "", "no_match"), ("vitale.read", patient_id, "success")]


def test_read_without_card_is_a_french_problem(client: TestClient[Any]) -> None:
    answer = client.post("/api/v1/cards/read", json={}, headers=token(client, "cards:read"))
    assert answer.status_code == 409
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["card_error"] == "no_card"
    assert problem["detail"] == "Aucune carte dans le lecteur."
    unknown = client.post(
        "/api/v1/cards/read", json={"reader": "Lecteur absent"}, headers=token(client, "cards:read")
    )
    assert unknown.status_code == 409
    assert unknown.json()["card_error"] == "reader_not_found"


def test_card_events_by_polling(client: TestClient[Any], vpcd_port: int) -> None:
    headers = token(client, "cards:read")
    first = client.get("/api/v1/cards/events", headers=headers).json()
    after = first["last_seq"]
    deadline = time.monotonic() + 5
    while not first["monitor_running"] and time.monotonic() < deadline:
        time.sleep(0.1)
        first = client.get("/api/v1/cards/events", headers=headers).json()
    kinds: list[tuple[str, str]] = []
    with Inserted(vpcd_port, vitale(JEANNE)):
        deadline = time.monotonic() + 5
        while ("inserted", READER) not in kinds and time.monotonic() < deadline:
            page = client.get(f"/api/v1/cards/events?after={after}", headers=headers).json()
            kinds += [(e["kind"], e["reader"]) for e in page["events"]]
            after = page["last_seq"]
            time.sleep(0.1)
    assert ("inserted", READER) in kinds
    assert client.get("/api/v1/cards/events?after=-1", headers=headers).status_code == 400


def test_cps_login_with_pin(client: TestClient[Any], vpcd_port: int) -> None:
    platform = app_platform(client)
    user_id = make_user(platform, "claire.cps", "pharmacien_titulaire", rpps_number=CPS_RPPS)
    with Inserted(vpcd_port, cps_card()):
        auth = start(client)
        assert 'id="cps-pin"' in auth.page.text
        wrong = submit(client, auth, method="cps", pin="0000")
        assert wrong.status_code == 403
        assert "il reste 2 essais" in wrong.text
        no_pin = submit(client, start(client), method="cps")
        assert no_pin.status_code == 403
        auth = start(client)
        tokens = exchange(
            client, code_from(submit(client, auth, method="cps", pin="1234")), auth.verifier
        )
    assert tokens.status_code == 200, tokens.text
    assert platform.tokens is not None
    principal = platform.tokens.verify(tokens.json()["access_token"])
    assert principal.subject == user_id
    assert principal.auth_methods == {"cps"}


def test_patient_found_or_created_from_the_card(client: TestClient[Any], vpcd_port: int) -> None:
    headers = token(client, "cards:read", "patients:write", "patients:read")
    with Inserted(vpcd_port, vitale(JEANNE, LEO)):
        only_cards = token(client, "cards:read")
        refused = client.post("/api/v1/cards/patients", json={}, headers=only_cards)
        assert refused.status_code == 403
        first = client.post("/api/v1/cards/patients", json={"beneficiary": 1}, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()["created"] is True
        again = client.post("/api/v1/cards/patients", json={"beneficiary": 1}, headers=headers)
        assert again.json() == {"patient_id": first.json()["patient_id"], "created": False}
        missing = client.post("/api/v1/cards/patients", json={"beneficiary": 5}, headers=headers)
        assert missing.status_code == 409
        assert missing.json()["detail"] == "La carte ne porte que 2 bénéficiaire(s)."
    patient_id = first.json()["patient_id"]
    record = client.get(f"/api/v1/patients/{patient_id}", headers=headers).json()
    assert record["identity"]["given_names"] == "LÉO"
    assert record["identity"]["nir"] == LEO["nir"]
    assert record["identity"]["status"] == "provisional"
    assert ("create", patient_id, "success") in audit_actions(app_platform(client))


READER_2 = "Virtual PCD 00 01"


def test_terminal_workstation_routes_reads_and_cps_login(
    client: TestClient[Any], vpcd_port: int
) -> None:
    """Two counters, two readers: a request from the terminal of « comptoir-2 » (its
    ``hygie_device`` cookie, shown on the login page) reads « 00 01 »; a terminal without a
    workstation keeps the default ``cards_reader`` (« 00 00 »)."""
    first = start(client)  # this browser's terminal cookie, set by the login page
    device = client.cookies.get(DEVICE_COOKIE)
    terminal = device_hash(device)
    assert terminal is not None
    here = terminal_id(terminal)
    assert f'<code id="terminal-id">{here}</code>' in first.page.text
    admin = token(client, "workstations:read", "workstations:write")
    for code, reader, on in (("comptoir-1", READER, None), ("comptoir-2", READER_2, here)):
        body = {"code": code, "label": code, "card_reader": reader, "terminal": on}
        created = client.post("/api/workstations/", json=body, headers=admin)
        assert created.status_code == 201, created.text
        assert created.json()["terminal"] == on
    clash = {"code": "comptoir-3", "label": "x", "terminal": here}
    assert client.post("/api/workstations/", json=clash, headers=admin).status_code == 409
    elsewhere = {"Cookie": f"{DEVICE_COOKIE}={'b' * 43}"}  # another, unbound terminal
    headers = token(client, "cards:read")
    with Inserted(vpcd_port, vitale(JEANNE)), Inserted(vpcd_port + 1, vitale(LEO)):
        mine = client.post("/api/v1/cards/read", json={}, headers=headers).json()
        assert (mine["reader"], mine["beneficiaries"][0]["nir"]) == (READER_2, LEO["nir"])
        other = client.post("/api/v1/cards/read", json={}, headers={**headers, **elsewhere})
        assert (other.json()["reader"], other.json()["beneficiaries"][0]["nir"]) == (
            READER,
            JEANNE["nir"],
        )
        asked = client.post("/api/v1/cards/read", json={"reader": READER}, headers=headers)
        assert asked.json()["reader"] == READER  # an explicit reader wins
        both = token(client, "cards:read", "patients:write")
        made = client.post("/api/v1/cards/patients", json={}, headers=both)
        assert made.status_code == 200, made.text
        record = client.get(
            f"/api/v1/patients/{made.json()['patient_id']}",
            headers=token(client, "patients:read"),
        )
        assert record.json()["identity"]["nir"] == LEO["nir"]
    platform = app_platform(client)
    holder = rpps(4343)
    user_id = make_user(platform, "claire.comptoir2", "pharmacien_titulaire", rpps_number=holder)
    card = parse_card(
        "cps",
        {
            "holder": {
                "surname": "DURAND",
                "first_name": "CLAIRE",
                "rpps": holder,
                "profession": "Pharmacien",
            },
            "pin": "1234",
        },
    )
    with Inserted(vpcd_port, vitale(JEANNE)), Inserted(vpcd_port + 1, card):
        auth = start(client)
        answer = submit(client, auth, method="cps", pin="1234")
        tokens = exchange(client, code_from(answer), auth.verifier)
        assert tokens.status_code == 200, tokens.text
        assert platform.tokens is not None
        assert platform.tokens.verify(tokens.json()["access_token"]).subject == user_id
        # The same login from an unbound terminal opens the default reader: a Vitale there.
        kept = next(c for c in client.cookies.jar if c.name == DEVICE_COOKIE)
        client.cookies.delete(DEVICE_COOKIE)
        try:
            auth = start(client)
            assert client.cookies.get(DEVICE_COOKIE) not in (None, device)
            refused = submit(client, auth, method="cps", pin="1234")
        finally:
            client.cookies.delete(DEVICE_COOKIE)
            client.cookies.jar.set_cookie(kept)
    assert refused.status_code == 403
    assert "Insérez votre carte CPS" in refused.text
    # The counter UI forwards its terminal cookie to the API: « Lire la carte Vitale » on the
    # browser of comptoir-2 reads « 00 01 ».
    make_user(platform, "anne.ui", "pharmacien_titulaire", display_name="Anne UI")
    browser = signed_in(client.app, "anne.ui")
    try:
        terminal = device_hash(browser.cookies.get(DEVICE_COOKIE))
        assert terminal is not None
        body = {"expected_version": 1, "label": "comptoir-2", "card_reader": READER_2}
        body["terminal"] = terminal_id(terminal)
        moved = client.put("/api/workstations/comptoir-2", json=body, headers=admin)
        assert moved.status_code == 200, moved.text
        with Inserted(vpcd_port, vitale(JEANNE)), Inserted(vpcd_port + 1, vitale(LEO)):
            page = browser.post(
                "/ui/cards/vitale",
                data={"csrf_token": csrf_of(browser)},
                headers={"HX-Request": "true"},
            )
    finally:
        browser.__exit__(None, None, None)
    assert page.status_code == 200, page.text
    assert "LÉO" in page.text
    assert "JEANNE" not in page.text
