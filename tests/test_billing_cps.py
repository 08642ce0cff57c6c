"""The production FSE signer: the virtual CPS in the vpcd reader of the real pcscd signs the
FSE after the card verified the PIN; a wrong PIN and a missing card are refused with the
card's French message. Uses tests/test_cards.py's pcscd fixture (skips, saying why, only
where pcscd or vpcd cannot run)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from appliance.config import load_settings
from services.sesam_vitale import CpsFseSigner, SignerUnavailable, fse_signed_bytes
from services.sesam_vitale.signing import verify_signature
from tests.test_billing_flow import AMO, JEANNE_NIR, Env, env, open_cycle
from tests.test_cards import HOLDER, Inserted, cps, vitale, vpcd_port
from tests.test_sesam_logic import sample_fse

__all__ = ["env", "vpcd_port"]  # the fixtures, imported to be shared


def test_fse_signed_by_the_cps_card(vpcd_port: int, tmp_path: Path) -> None:
    settings = load_settings({"HYGIE_CARDS_READ_TIMEOUT_S": "3"})
    fse = sample_fse(tmp_path)
    data = fse_signed_bytes(fse)
    with Inserted(vpcd_port, cps()):
        with pytest.raises(SignerUnavailable, match="Code PIN incorrect : il reste 2 essais"):
            CpsFseSigner(settings, "0000").sign(data)
        signature = CpsFseSigner(settings, "1234").sign(data)
    assert signature.signer_rpps == HOLDER["rpps"]
    assert signature.signer_name == "CLAIRE DURAND"
    assert verify_signature(data, signature) is None
    assert verify_signature(data + b" ", signature) == "the signature does not match the FSE"


def test_no_card_in_the_reader(vpcd_port: int, tmp_path: Path) -> None:
    settings = load_settings({"HYGIE_CARDS_READ_TIMEOUT_S": "0.5"})
    with pytest.raises(SignerUnavailable, match="carte"):
        CpsFseSigner(settings, "1234").sign(b"FSE")


def test_counter_scenario_vitale_bpm_step_cps_signature_paid(
    env: Env,
    vpcd_port: int,
) -> None:
    """The issue's « done when »: a Vitale card is read, the patient found or created, a BPM
    step billed, the FSE signed with the CPS and its PIN, queued, and the simulated return
    marks it paid."""
    assert env.platform.tokens is not None
    token = env.platform.tokens.issue(
        subject="pharma-1",
        role="pharmacien_titulaire",
        scopes=(
            "cards:read",
            "patients:read",
            "patients:write",
            "bpm:read",
            "bpm:write",
            "billing:read",
            "billing:write",
        ),
    )
    h = {"Authorization": f"Bearer {token}"}
    # This simulator trusts any signature that verifies (the virtual CPS's CA is made on the
    # fly by the card); the logic tests cover the trust-anchor check.
    env.sim.sim.trust_anchors = None
    card = {
        "surname": "MARTIN",
        "first_name": "JEANNE",
        "birth_date": "1948-02-14",
        "nir": JEANNE_NIR,
    }
    with Inserted(vpcd_port, vitale(card)):
        read = env.client.post("/api/v1/cards/read", json={}, headers=h)
        assert read.status_code == 200, read.text
        beneficiary = read.json()["beneficiaries"][0]
        assert beneficiary["patient_id"] is None
        form = {
            **beneficiary["form"],
            "coverage": {"amo": AMO, "amc": {"organisation": "Mutuelle test"}},
            "consents": [{"kind": "bpm_adhesion", "status": "granted", "decided_on": "2024-05-01"}],
        }
        created = env.client.post("/api/v1/patients", json=form, headers=h)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        again = env.client.post("/api/v1/cards/read", json={}, headers=h).json()
        assert again["beneficiaries"][0]["patient_id"] == pid  # found now
    cid = open_cycle(env, pid, ["adhesion", "recueil"])
    rights = env.client.post(
        "/api/v1/billing/checks", json={"patient_id": pid, "kind": "rights"}, headers=h
    )
    assert rights.json()["status"] == "checked"
    billed = env.client.post(
        "/api/v1/billing/acts",
        headers=h,
        json={"patient_id": pid, "bpm_cycle_id": cid, "step": "recueil"},
    )
    assert billed.status_code == 201, billed.text
    fse_id = billed.json()["fse"]["id"]
    with Inserted(vpcd_port, cps()):
        wrong = env.client.post(
            f"/api/v1/billing/fse/{fse_id}/sign", json={"pin": "0000"}, headers=h
        )
        assert wrong.status_code == 409
        assert "Code PIN incorrect" in wrong.json()["detail"]
        signed = env.client.post(
            f"/api/v1/billing/fse/{fse_id}/sign", json={"pin": "1234"}, headers=h
        )
    assert signed.status_code == 200, signed.text
    assert signed.json()["fse"]["signature"]["signer_rpps"] == HOLDER["rpps"]
    lot = env.client.post("/api/v1/billing/lots", headers=h).json()["lot"]
    fse = env.client.get(f"/api/v1/billing/fse/{fse_id}", headers=h).json()
    payload = {
        "lot_id": lot["id"],
        "number": lot["lot"]["number"],
        "fses": [{"fse_id": fse_id, "fse": fse["fse"]}],
    }
    ack = httpx.post(f"{env.sim.url}/teletransmission/v1/lots", json=payload).text
    assert "|ACCEPTE|" in ack
    rsp = httpx.get(f"{env.sim.url}/teletransmission/v1/returns/{lot['id']}").text
    for text in (ack, rsp):
        env.client.post("/api/v1/billing/returns", json={"text": text}, headers=h)
    state = env.client.get(f"/api/v1/billing/fse/{fse_id}", headers=h).json()["fse"]
    assert (state["state"], state["paid_cents"]) == ("paid", 2333)
