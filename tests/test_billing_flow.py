"""Billing end to end over HTTP, against the LOCAL teleservice SIMULATOR on loopback:
rights and INSi checks, BPM steps billed (and the refusals), FSE signed with a key from a
test CA, lots handed to the outbox, the simulated returns (paid, rejected) reconciled,
unpaid/rejected lists, payments, CSV and FEC exports, monthly summary, CLI mirrors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.cli import main
from appliance.config import load_settings
from appliance.platform import Platform
from appliance.tasks import record_heartbeat
from services.sesam_vitale.logic import parse_return
from services.sesam_vitale.signing import SIGNER_CERT_FILE, SIGNER_KEY_FILE
from services.sesam_vitale.simulator import SimBeneficiary, SimData, Simulator, SimulatorServer
from tests.conftest import hygie_env
from tests.test_sesam_logic import TEST_TARIFF, make_test_ca

JEANNE_NIR = "248027512345642"
PAUL_NIR = "152067512345657"
SIM_DATA = SimData(
    beneficiaries=(
        SimBeneficiary(
            nir=JEANNE_NIR,
            birth_family_name="MARTIN",
            given_names="JEANNE MARIE",
            birth_date=date(1948, 2, 14),
            sex="F",
            amc_organisation="Mutuelle test",
        ),
        # Rights closed before the act date: the FSE comes back rejected (DRT).
        SimBeneficiary(
            nir=PAUL_NIR,
            birth_family_name="DURAND",
            given_names="PAUL",
            birth_date=date(1952, 6, 3),
            sex="M",
            rights_until=date(2024, 3, 31),
        ),
    )
)


@dataclass
class Env:
    client: TestClient  # type: ignore[type-arg]
    platform: Platform
    values: dict[str, str | None]
    sim: SimulatorServer
    headers: dict[str, str]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("billing")
    (tmp / "hygie.toml").write_text("# test configuration\n")
    (tmp / "tariff.toml").write_text(TEST_TARIFF, encoding="utf-8")
    ca, _, key_pem, cert_pem = make_test_ca(tmp)
    sim = SimulatorServer(Simulator(SIM_DATA, [ca])).start()
    values = hygie_env(
        tmp,
        HYGIE_LOG_LEVEL="WARNING",
        HYGIE_SESAM_ADRI_URL=sim.url,
        HYGIE_SESAM_INSI_URL=sim.url,
        HYGIE_SESAM_TRANSMISSION_URL=sim.url,
        HYGIE_BILLING_TARIFF_FILE=str(tmp / "tariff.toml"),
        HYGIE_BILLING_SIREN="123456789",
        HYGIE_PHARMACY_FINESS="750000001",
        HYGIE_RETRY_ATTEMPTS="2",
        HYGIE_RETRY_INITIAL_WAIT_S="0.01",
    )
    cleared: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("HYGIE_") or k == "CREDENTIALS_DIRECTORY"
    }
    runner = CliRunner()
    for args in (["keys", "init"], ["db", "migrate"]):
        result = runner.invoke(main, args, env={**cleared, **values}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    keys = Path(values["HYGIE_KEY_DIR"])
    (keys / SIGNER_KEY_FILE).write_bytes(key_pem)
    (keys / SIGNER_CERT_FILE).write_bytes(cert_pem)
    app = create_app(load_settings(values))
    try:
        with TestClient(app=app) as client:
            platform: Platform = app.state.platform
            record_heartbeat(platform.store, "test-worker")
            assert platform.tokens is not None
            token = platform.tokens.issue(
                subject="pharma-1",
                role="pharmacien_titulaire",
                scopes=(
                    "patients:read",
                    "patients:write",
                    "bpm:read",
                    "bpm:write",
                    "billing:read",
                    "billing:write",
                ),
            )
            yield Env(
                client, platform, {**cleared, **values}, sim, {"Authorization": f"Bearer {token}"}
            )
    finally:
        sim.stop()


def make_patient(env: Env, identity: dict[str, Any], coverage: dict[str, Any]) -> str:
    body = {
        "identity": identity,
        "coverage": coverage,
        "consents": [{"kind": "bpm_adhesion", "status": "granted", "decided_on": "2024-05-01"}],
    }
    response = env.client.post("/api/v1/patients", json=body, headers=env.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def open_cycle(env: Env, pid: str, steps: list[str]) -> str:
    opened = env.client.post(
        "/api/v1/bpm", json={"patient_id": pid, "opened_on": "2024-05-02"}, headers=env.headers
    )
    assert opened.status_code == 201, opened.text
    cid = str(opened.json()["id"])
    version = 1
    for i, kind in enumerate(steps):
        body = {"expected_version": version, "kind": kind, "performed_on": f"2024-05-{2 + i:02d}"}
        done = env.client.post(f"/api/v1/bpm/{cid}/steps", json=body, headers=env.headers)
        assert done.status_code == 200, done.text
        version = done.json()["version"]
    return cid


def bill(env: Env, pid: str, cid: str, step: str, **extra: Any) -> httpx.Response:
    body = {"patient_id": pid, "bpm_cycle_id": cid, "step": step, **extra}
    return env.client.post("/api/v1/billing/acts", json=body, headers=env.headers)


def transmit(env: Env, lot: dict[str, Any]) -> list[dict[str, Any]]:
    """What the sync agent and the network would do: the lot to the (simulated) Assurance
    Maladie, the ARL and the payment return back into Hygie."""
    fses = [
        env.client.get(f"/api/v1/billing/fse/{fid}", headers=env.headers).json()
        for fid in lot["lot"]["fse_ids"]
    ]
    payload = {
        "lot_id": lot["id"],
        "number": lot["lot"]["number"],
        "fses": [{"fse_id": f["id"], "fse": f["fse"]} for f in fses],
    }
    ack = httpx.post(f"{env.sim.url}/teletransmission/v1/lots", json=payload).text
    results = [
        env.client.post("/api/v1/billing/returns", json={"text": ack}, headers=env.headers).json()
    ]
    if "|ACCEPTE|" in ack:
        rsp = httpx.get(f"{env.sim.url}/teletransmission/v1/returns/{lot['id']}").text
        parse_return(rsp)
        results.append(
            env.client.post(
                "/api/v1/billing/returns", json={"text": rsp}, headers=env.headers
            ).json()
        )
    return results


JEANNE = {
    "birth_family_name": "Martin",
    "given_names": "Jeanne Marie",
    "birth_date": "1948-02-14",
    "sex": "F",
    "nir": JEANNE_NIR,
}
AMO = {"regime": "01", "caisse": "751", "centre": "0001"}


def test_bpm_steps_billed_signed_sent_and_paid(env: Env) -> None:
    pid = make_patient(env, JEANNE, {"amo": AMO, "amc": {"organisation": "Mutuelle test"}})
    cid = open_cycle(env, pid, ["adhesion", "recueil", "analyse"])
    h = env.headers

    rights = env.client.post(
        "/api/v1/billing/checks", json={"patient_id": pid, "kind": "rights"}, headers=h
    )
    assert rights.status_code == 200, rights.text
    assert rights.json()["status"] == "checked"
    assert rights.json()["rights"]["regime"] == "01"
    insi = env.client.post(
        "/api/v1/billing/checks", json={"patient_id": pid, "kind": "insi"}, headers=h
    ).json()
    assert (insi["status"], insi["insi"]["oid"]) == ("checked", "1.2.250.1.213.1.4.10")
    assert (
        len(env.client.get(f"/api/v1/billing/patients/{pid}/checks", headers=h).json()["checks"])
        == 2
    )

    # Refusals, each a clear 4xx and nothing stored.
    not_done = bill(env, pid, cid, "conseil")
    assert not_done.status_code == 409
    assert not_done.json()["type"].endswith("step-not-done")
    assert "n'est pas réalisée" in not_done.json()["detail"]
    assert bill(env, pid, cid, "recueil", exoneration="ald").json()["type"].endswith("no-ald")
    assert bill(env, pid, cid, "analyse", remote=True).status_code == 400
    missing = "00000000-0000-4000-8000-000000000000"
    assert bill(env, missing, cid, "recueil").status_code == 404
    assert bill(env, pid, "not-a-uuid", "recueil").status_code == 400

    tac = bill(env, pid, cid, "adhesion")
    assert tac.status_code == 201, tac.text
    assert tac.json()["fse"]["fse"]["pricing"]["lines"][0]["code"] == "TAC"
    recueil = bill(env, pid, cid, "recueil").json()
    invoice = recueil["invoice"]["invoice"]
    assert (invoice["total_cents"], invoice["amo_cents"], invoice["amc_cents"]) == (
        3333,
        2333,
        1000,
    )
    assert invoice["patient_cents"] == 0
    assert bill(env, pid, cid, "recueil").json()["type"].endswith("already-billed")

    fse_ids = [tac.json()["fse"]["id"], recueil["fse"]["id"]]
    for fid in fse_ids:
        signed = env.client.post(f"/api/v1/billing/fse/{fid}/sign", json={}, headers=h)
        assert signed.status_code == 200, signed.text
        assert signed.json()["fse"]["signature"]["signer_rpps"] == "10000000006"
    again = env.client.post(f"/api/v1/billing/fse/{fse_ids[0]}/sign", json={}, headers=h)
    assert again.status_code == 409

    sent = env.client.post("/api/v1/billing/lots", headers=h)
    assert sent.status_code == 201, sent.text
    lot = sent.json()["lot"]
    assert lot["lot"]["state"] == "sent"
    assert sorted(lot["lot"]["fse_ids"]) == sorted(fse_ids)
    outbox = env.platform.store.db.execute(
        "SELECT stream, kind FROM sync_outbox WHERE idempotency_key = ?", [f"fse-lot:{lot['id']}"]
    ).fetchall()
    assert outbox == [("teletransmission", "fse.lot")]
    assert env.client.post("/api/v1/billing/lots", headers=h).json()["lot"] is None

    ack, paid = transmit(env, lot)
    assert ack["acknowledged_lots"] == [lot["id"]]
    assert sorted(paid["paid"]) == sorted(fse_ids)
    assert paid["payments_recorded"] == 2
    history = env.client.get(f"/api/v1/billing/fse/{fse_ids[1]}/history", headers=h).json()
    assert [v["fse"]["state"] for v in history] == [
        "created",
        "signed",
        "sent",
        "acknowledged",
        "paid",
    ]
    assert history[-1]["fse"]["paid_cents"] == 2333

    # The AMC part stays unpaid until the complementary pays it.
    unpaid = env.client.get("/api/v1/billing/unpaid", headers=h).json()
    mine = [u for u in unpaid if u["patient_id"] == pid]
    assert [(u["outstanding_amo_cents"], u["outstanding_amc_cents"]) for u in mine] == [(0, 1000)]
    inv_id = recueil["invoice"]["id"]
    over = env.client.post(
        f"/api/v1/billing/invoices/{inv_id}/payments",
        headers=h,
        json={"payer": "amc", "amount_cents": 1001, "paid_on": "2024-06-10", "method": "transfer"},
    )
    assert over.status_code == 409
    ok = env.client.post(
        f"/api/v1/billing/invoices/{inv_id}/payments",
        headers=h,
        json={"payer": "amc", "amount_cents": 1000, "paid_on": "2024-06-10", "method": "transfer"},
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["status"] == "paid"
    invoices = env.client.get(f"/api/v1/billing/patients/{pid}/invoices", headers=h).json()
    assert {i["status"] for i in invoices} == {"paid"}


def test_rejected_fse_is_listed(env: Env) -> None:
    paul = {
        "birth_family_name": "Durand",
        "given_names": "Paul",
        "birth_date": "1952-06-03",
        "sex": "M",
        "nir": PAUL_NIR,
    }
    # The card says open; the simulated Assurance Maladie knows the rights ended in March.
    pid = make_patient(env, paul, {"amo": AMO})
    cid = open_cycle(env, pid, ["adhesion", "recueil"])
    h = env.headers
    fse = bill(env, pid, cid, "recueil").json()["fse"]
    env.client.post(f"/api/v1/billing/fse/{fse['id']}/sign", json={}, headers=h)
    lot = env.client.post("/api/v1/billing/lots", headers=h).json()["lot"]
    ack, answer = transmit(env, lot)
    assert ack["acknowledged_lots"] == [lot["id"]]
    assert answer["rejected"] == [fse["id"]]
    rejected = env.client.get("/api/v1/billing/rejected", headers=h).json()
    mine = [r for r in rejected if r["fse_id"] == fse["id"]]
    assert [(r["code"], r["label"]) for r in mine] == [
        ("DRT", "Droits non ouverts à la date des soins")
    ]
    state = env.client.get(f"/api/v1/billing/fse/{fse['id']}", headers=h).json()["fse"]["state"]
    assert state == "rejected"
    unpaid = env.client.get("/api/v1/billing/unpaid", headers=h).json()
    assert [u["fse_state"] for u in unpaid if u["patient_id"] == pid] == ["rejected"]
    # Once the rights check says so, the counter cannot bill that act date at all.
    env.client.post("/api/v1/billing/checks", json={"patient_id": pid, "kind": "rights"}, headers=h)
    refused = bill(env, pid, cid, "adhesion")
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("no-coverage")


def test_patient_without_coverage_is_refused(env: Env) -> None:
    nobody = {
        "birth_family_name": "Sans",
        "given_names": "Droits",
        "birth_date": "1950-01-01",
        "sex": "F",
        "nir": "250017512345625",
    }
    pid = make_patient(env, nobody, {})
    cid = open_cycle(env, pid, ["adhesion"])
    refused = bill(env, pid, cid, "adhesion")
    assert refused.status_code == 409
    assert "Aucun droit" in refused.json()["detail"]
    assert (
        env.client.get(f"/api/v1/billing/patients/{pid}/invoices", headers=env.headers).json() == []
    )
    anonymous = {
        "birth_family_name": "Sans",
        "given_names": "Numero",
        "birth_date": "1950-01-01",
        "sex": "F",
    }
    no_nir = make_patient(env, anonymous, {"amo": AMO})
    check = env.client.post(
        "/api/v1/billing/checks", headers=env.headers, json={"patient_id": no_nir, "kind": "rights"}
    )
    assert check.status_code == 409
    assert "NIR" in check.json()["detail"]
    cycle = open_cycle(env, no_nir, ["adhesion"])
    assert bill(env, no_nir, cycle, "adhesion").json()["type"].endswith("no-nir")
    missing = env.client.post(
        "/api/v1/billing/checks",
        headers=env.headers,
        json={"patient_id": "00000000-0000-4000-8000-000000000000", "kind": "insi"},
    )
    assert missing.status_code == 404


def test_returns_are_applied_once_and_malformed_ones_refused(env: Env) -> None:
    h = env.headers
    bad = env.client.post("/api/v1/billing/returns", json={"text": "garbage"}, headers=h)
    assert bad.status_code == 400
    assert "line 1" in bad.json()["detail"]
    text = "000|NOEMIE-HYGIE|1|SIM|20240601\nARL|unknown-lot|ACCEPTE|000|ok\n999|1\n"
    first = env.client.post("/api/v1/billing/returns", json={"text": text}, headers=h).json()
    assert (first["duplicate"], first["ignored"]) == (False, ["ARL unknown-lot"])
    assert env.client.post("/api/v1/billing/returns", json={"text": text}, headers=h).json()[
        "duplicate"
    ]


def test_exports_and_summary(env: Env) -> None:
    h = env.headers
    fec = env.client.get(
        "/api/v1/billing/export/fec",
        headers=h,
        params={"start": "2024-01-01", "end": "2024-12-31"},
    )
    assert fec.status_code == 200, fec.text
    assert "123456789FEC20241231.txt" in fec.headers["content-disposition"]
    lines = fec.text.rstrip("\n").split("\n")
    assert lines[0].split("\t")[:3] == ["JournalCode", "JournalLib", "EcritureNum"]
    assert all(len(line.split("\t")) == 18 for line in lines)
    debit = sum(int(x.split("\t")[11].replace(",", "")) for x in lines[1:])
    credit = sum(int(x.split("\t")[12].replace(",", "")) for x in lines[1:])
    assert debit == credit > 0
    pipe = env.client.get(
        "/api/v1/billing/export/fec",
        headers=h,
        params={"start": "2024-01-01", "end": "2024-12-31", "separator": "pipe"},
    )
    assert all(len(line.split("|")) == 18 for line in pipe.text.rstrip("\n").split("\n"))
    csv_text = env.client.get(
        "/api/v1/billing/export/csv", headers=h, params={"start": "2024-01-01", "end": "2024-12-31"}
    ).text
    assert csv_text.startswith("date,journal,entry,account")
    assert (
        env.client.get(
            "/api/v1/billing/export/csv",
            headers=h,
            params={"start": "2024-12-31", "end": "2024-01-01"},
        ).status_code
        == 400
    )
    tac = env.client.get("/api/v1/billing/invoices", params={"code": "TAC"}, headers=h).json()
    assert tac
    assert all(i["invoice"]["lines"][0]["code"] == "TAC" for i in tac)
    assert (
        env.client.get(
            "/api/v1/billing/invoices", params={"code": "bad code"}, headers=h
        ).status_code
        == 400
    )
    summary = env.client.get("/api/v1/billing/summary", params={"month": "2024-05"}, headers=h)
    assert summary.status_code == 200, summary.text
    figures = summary.json()
    assert figures["invoices"] >= 3
    assert (
        figures["total_cents"]
        == figures["amo_cents"] + figures["amc_cents"] + figures["patient_cents"]
    )
    assert {c["code"] for c in figures["by_code"]} >= {"TAC", "XR1"}
    assert (
        env.client.get(
            "/api/v1/billing/summary", params={"month": "2024-13"}, headers=h
        ).status_code
        == 400
    )


def test_scopes_are_enforced(env: Env) -> None:
    assert env.platform.tokens is not None
    reader = env.platform.tokens.issue(subject="r", role="preparateur", scopes=("billing:read",))
    headers = {"Authorization": f"Bearer {reader}"}
    assert env.client.get("/api/v1/billing/tariff", headers=headers).status_code == 200
    assert env.client.post("/api/v1/billing/lots", headers=headers).status_code == 403
    assert env.client.get("/api/v1/billing/unpaid").status_code == 401


def test_cli_mirrors(env: Env, tmp_path: Path) -> None:
    runner = CliRunner()
    tariff = runner.invoke(main, ["sesam", "tariff"], env=env.values)
    assert tariff.exit_code == 0, tariff.output
    assert "JORF n°0160 du 7 juillet 2024" in tariff.output
    summary = runner.invoke(main, ["billing", "summary", "2024-05"], env=env.values)
    assert summary.exit_code == 0, summary.output
    assert runner.invoke(main, ["billing", "summary", "2024-13"], env=env.values).exit_code == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("nope\n")
    refused = runner.invoke(main, ["billing", "returns", "import", str(bad)], env=env.values)
    assert refused.exit_code == 2
    assert "fichier de retour invalide" in refused.output
    out = tmp_path / "fec.txt"
    exported = runner.invoke(
        main,
        [
            "billing",
            "export",
            "--start",
            "2024-01-01",
            "--end",
            "2024-12-31",
            "--format",
            "fec",
            "-o",
            str(out),
        ],
        env=env.values,
    )
    assert exported.exit_code == 0, exported.output
    assert out.read_text().startswith("JournalCode\tJournalLib")
    unknown = runner.invoke(
        main, ["sesam", "sign", "00000000-0000-4000-8000-000000000000"], env=env.values
    )
    assert unknown.exit_code == 2


def test_relay_items_from_the_sync_inbox_are_reconciled(env: Env) -> None:
    """The sync relay's contract (docs/sync.md): ``fse.ack`` and ``fse.payment`` items for a
    lot; a lot payment marks its FSE paid only when it is exactly the lot's AMO total."""
    from appliance.outbox import receive
    from services.billing import process_inbox

    h = env.headers
    first = {**JEANNE, "nir": "248027512345741", "given_names": "Jeanne Relais"}
    pid = make_patient(env, first, {"amo": AMO})
    cid = open_cycle(env, pid, ["adhesion", "recueil"])
    fse = bill(env, pid, cid, "recueil").json()["fse"]
    env.client.post(f"/api/v1/billing/fse/{fse['id']}/sign", json={}, headers=h)
    lot = env.client.post("/api/v1/billing/lots", headers=h).json()["lot"]
    total = lot["lot"]["total_amo_cents"]
    store = env.platform.store
    with store.write() as db:
        receive(
            db,
            remote_id=f"ack-{lot['id']}",
            stream="teletransmission",
            kind="fse.ack",
            payload={"lot_id": lot["id"], "status": "accepted", "reason": None},
        )
        receive(
            db,
            remote_id=f"pay-wrong-{lot['id']}",
            stream="teletransmission",
            kind="fse.payment",
            payload={"lot_id": lot["id"], "amount_cents": total + 1, "paid_on": "2024-06-20"},
        )
        receive(
            db,
            remote_id=f"pay-{lot['id']}",
            stream="teletransmission",
            kind="fse.payment",
            payload={"lot_id": lot["id"], "amount_cents": total, "paid_on": "2024-06-20"},
        )
    results = process_inbox(store, actor="system:worker")
    assert results[0].acknowledged_lots == [lot["id"]]
    assert "à rapprocher à la main" in results[1].ignored[0]
    assert results[1].paid == []
    assert results[2].paid == [fse["id"]]
    assert results[2].payments_recorded == 1
    assert process_inbox(store, actor="system:worker") == []  # each item once
    with store.write() as db:
        receive(
            db,
            remote_id="rej-unknown",
            stream="teletransmission",
            kind="fse.rejection",
            payload={"lot_id": "unknown-lot", "reason": "lot illisible"},
        )
    assert process_inbox(store, actor="system:worker")[0].ignored == ["ARL unknown-lot"]
    state = env.client.get(f"/api/v1/billing/fse/{fse['id']}", headers=h).json()["fse"]
    assert (state["state"], state["paid_cents"]) == ("paid", 2333)


def test_cli_bills_signs_sends_and_transmits(env: Env) -> None:
    """The counter's terminal path: every step through ``hygie sesam`` / ``hygie billing``."""
    import json

    runner = CliRunner()
    someone = {**JEANNE, "nir": "248027512345840", "given_names": "Jeanne Terminal"}
    pid = make_patient(env, someone, {"amo": AMO})
    cid = open_cycle(env, pid, ["adhesion", "recueil"])

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args), env=env.values)
        assert result.exit_code == 0, result.output
        return result.output

    not_done = runner.invoke(main, ["billing", "bill", pid, cid, "conseil"], env=env.values)
    assert not_done.exit_code == 1
    assert "n'est pas réalisée" in not_done.output
    assert runner.invoke(main, ["billing", "bill", pid, cid, "nope"], env=env.values).exit_code == 2
    billed = json.loads(run("billing", "bill", pid, cid, "recueil"))
    fse_id = billed["fse_id"]
    assert json.loads(run("sesam", "sign", fse_id))["state"] == "signed"
    lot = json.loads(run("sesam", "send"))
    assert lot["fse"] == 1
    returns = json.loads(run("billing", "transmit", lot["lot_id"]))
    assert returns[0]["acknowledged_lots"] == [lot["lot_id"]]
    assert returns[1]["rejected"] == [fse_id]  # the simulator does not know this beneficiary
    assert fse_id in run("billing", "rejected")
    listed = json.loads(run("billing", "invoices", "--patient", pid))
    assert [i["status"] for i in listed] == ["rejected"]
    invoice_id = listed[0]["id"]
    over = runner.invoke(
        main,
        [
            "billing",
            "pay",
            invoice_id,
            "--payer",
            "patient",
            "--amount-cents",
            "1001",
            "--method",
            "cash",
        ],
        env=env.values,
    )
    assert over.exit_code == 1  # the patient owes 10.00 EUR (30 % of 33.33 EUR), not more
    assert "dépasse" in over.output
    checked = json.loads(run("sesam", "check", "rights", pid))
    assert checked["status"] == "not_found"
    assert "inconnu" in checked["message"]
    refused = runner.invoke(main, ["billing", "bill", pid, cid, "adhesion"], env=env.values)
    assert refused.exit_code == 1  # the ADRi answer (unknown) closes the AMO rights
    assert "Aucun droit" in refused.output


def test_teleservice_down_over_http_is_queued_not_an_error(env: Env) -> None:
    from appliance.resilience import Breakers, RetryPolicy
    from services.billing.api import CLIENT_STATE_KEY
    from services.sesam_vitale import TeleserviceClient
    from tests.test_sesam_teleservices import closed_port_url

    someone = {**JEANNE, "nir": "248027512345939", "given_names": "Jeanne Hors Ligne"}
    pid = make_patient(env, someone, {"amo": AMO})
    state = env.client.app.state
    live = state.get(CLIENT_STATE_KEY)
    url = closed_port_url()
    state[CLIENT_STATE_KEY] = TeleserviceClient(
        adri_url=url,
        insi_url=url,
        transmission_url=url,
        timeout_s=1.0,
        retry=RetryPolicy(attempts=2, initial_wait_s=0.01, max_wait_s=0.02),
        breakers=Breakers(threshold=50, ttl_s=60),
    )
    try:
        queued = env.client.post(
            "/api/v1/billing/checks",
            json={"patient_id": pid, "kind": "rights"},
            headers=env.headers,
        )
    finally:
        if live is None:
            del state[CLIENT_STATE_KEY]
        else:
            state[CLIENT_STATE_KEY] = live
    assert queued.status_code == 200, queued.text
    body = queued.json()
    assert (body["status"], body["rights"]) == ("unchecked", None)
    assert "injoignable" in body["message"]
    # The counter can still bill on the card's coverage: the check is only queued.
    cid = open_cycle(env, pid, ["adhesion", "recueil"])
    assert bill(env, pid, cid, "recueil").status_code == 201
