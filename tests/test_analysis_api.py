"""The analysis through HTTP (stored, audited), CDS Hooks, and the ``hygie analyze`` CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from appliance.cli import main
from appliance.platform import Platform

VIGNETTES = Path(__file__).parent / "fixtures" / "vignettes"
CONTRACT_KEYS = {"source", "as_of", "knowledge", "bpm_eligibility", "findings", "not_evaluated"}
FINDING_KEYS = {
    "kind",
    "rule",
    "severity",
    "atc",
    "message",
    "recommendation",
    "confidence",
    "evidence",
}


def _bundle(name: str) -> dict[str, Any]:
    return json.loads((VIGNETTES / f"{name}.json").read_text())["bundle"]  # type: ignore[no-any-return]


def test_post_analysis_is_stored_audited_and_readable(
    client: Any, auth: dict[str, str], platform: Platform
) -> None:
    created = client.post("/api/v1/analyses", json=_bundle("dose-doac-rivaroxaban"), headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) >= CONTRACT_KEYS
    assert body["as_of"] == "2026-01-15"
    assert body["knowledge"]["thesaurus"] == "ansm-2019-09"
    assert body["findings"]
    assert set(body["findings"][0]) >= FINDING_KEYS
    read = client.get(f"/api/v1/analyses/{body['id']}", headers=auth)
    assert read.status_code == 200
    assert read.json()["findings"] == body["findings"]
    events = [(e.action, e.object_type, e.object_id, e.purpose) for e in platform.audit.entries()]
    assert ("create", "analysis", body["id"], "care") in events
    assert ("read", "analysis", body["id"], "care") in events


def test_a_stored_analysis_is_enqueued_pseudonymised_for_replication(
    client: Any, auth: dict[str, str], platform: Platform
) -> None:
    from appliance.outbox import stream_entries
    from services.patients import patient_crypto

    bundle = _bundle("dose-doac-rivaroxaban")
    created = client.post("/api/v1/analyses", json=bundle, headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()
    entries = [
        e for e in stream_entries(platform.store.db, "analyses") if e.kind == "analysis.result"
    ]
    assert len(entries) == 1
    payload = entries[0].payload
    assert payload["analysis_id"] == body["id"]
    assert payload["result"]["findings"] == body["findings"]
    assert payload["result"]["source"] is None
    expected = patient_crypto(platform.settings).pseudonyms.pseudonym("vignette")
    assert payload["patient"] == expected
    assert payload["patient"].startswith("psn-")
    assert "vignette" not in json.dumps(payload)  # the bundle's patient id never leaves
    again = client.post("/api/v1/analyses", json=bundle, headers=auth).json()
    entries = stream_entries(platform.store.db, "analyses")
    assert [e.payload["analysis_id"] for e in entries] == [body["id"], again["id"]]


def test_bad_bundles_are_problems_not_500(client: Any, auth: dict[str, str]) -> None:
    answer = client.post("/api/v1/analyses", json={"resourceType": "Patient"}, headers=auth)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("application/problem+json")
    answer = client.post("/api/v1/analyses", json=[1, 2], headers=auth)
    assert 400 <= answer.status_code < 500
    assert client.get("/api/v1/analyses/an-0000000000000000", headers=auth).status_code == 404


def test_analysis_needs_its_scope(client: Any, token_for: Any) -> None:
    headers = {"Authorization": f"Bearer {token_for('patients:read')}"}
    assert (
        client.post(
            "/api/v1/analyses", json=_bundle("neg-paracetamol"), headers=headers
        ).status_code
        == 403
    )
    headers = {"Authorization": f"Bearer {token_for('analysis:run')}"}
    assert (
        client.post(
            "/api/v1/analyses", json=_bundle("neg-paracetamol"), headers=headers
        ).status_code
        == 201
    )


def test_cds_hooks_discovery_and_cards(client: Any, auth: dict[str, str]) -> None:
    services = client.get("/cds-services", headers=auth).json()["services"]
    assert {s["hook"] for s in services} == {"medication-prescribe", "order-select"}
    bundle = _bundle("int-avoid-nsaid-anticoagulant")
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    statements = [
        e for e in bundle["entry"] if e["resource"]["resourceType"] == "MedicationStatement"
    ]
    draft = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "medicationCodeableConcept": statements[0]["resource"]["medicationCodeableConcept"],
    }
    request = {
        "hook": "medication-prescribe",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "patientId": "vignette",
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": draft}]},
        },
        "prefetch": {
            "patient": patient,
            "medications": {"resourceType": "Bundle", "entry": statements[1:]},
        },
    }
    answer = client.post("/cds-services/hygie-medication-review", json=request, headers=auth)
    assert answer.status_code == 200, answer.text
    cards = answer.json()["cards"]
    assert any(c["indicator"] == "critical" for c in cards)
    assert all(len(c["summary"]) <= 140 for c in cards)
    assert client.post("/cds-services/other", json=request, headers=auth).status_code == 404


def test_cli_one_path_and_several(env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    first = VIGNETTES / "stopp-d8-benzo.json"
    paths = []
    for name in ("stopp-d8-benzo", "neg-paracetamol"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(_bundle(name)))
        paths.append(str(path))
    one = runner.invoke(main, ["analyze", paths[0]])
    assert one.exit_code == 0, one.output
    data = json.loads(one.output)
    assert set(data) >= CONTRACT_KEYS
    assert any(f["rule"] == "STOPP v3 D8" for f in data["findings"])
    several = runner.invoke(main, ["analyze", *paths])
    lines = several.output.strip().splitlines()
    assert [json.loads(line)["source"] for line in lines] == paths
    stdin = runner.invoke(main, ["analyze", "-"], input=json.dumps(_bundle("neg-paracetamol")))
    assert stdin.exit_code == 0
    assert json.loads(stdin.output)["source"] == "-"
    assert first.exists()


def test_cli_errors_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(main, ["analyze", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("hygie: ")
    assert len(result.output.strip().splitlines()) == 1
    missing = runner.invoke(main, ["analyze", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1
    assert "cannot read" in missing.output


def test_drugs_known_only_by_cis_are_matched_through_the_catalog(
    env: dict[str, str], platform: Platform
) -> None:
    """Warfarin has no ATC code in BDPM: COUMADINE + KARDEGIC found by substance codes."""
    from services.analysis import analyze_bundle

    fixture = Path(__file__).parent / "fixtures" / "bdpm-mini"
    imported = CliRunner().invoke(main, ["catalog", "import", str(fixture)])
    assert imported.exit_code == 0, imported.output
    bundle = _bundle("neg-paracetamol")
    for cis, name in (
        ("63245753", "COUMADINE 5 mg"),
        ("64755969", "KARDEGIC 75 mg"),
        ("99999999", "X"),
    ):
        bundle["entry"].append(
            {
                "resource": {
                    "resourceType": "MedicationStatement",
                    "status": "active",
                    "medicationCodeableConcept": {
                        "coding": [
                            {"system": "https://smt.esante.gouv.fr/terminologie-cis", "code": cis}
                        ],
                        "text": name,
                    },
                }
            }
        )
    result = analyze_bundle(bundle, platform.store)
    found = [f for f in result.findings if f.kind == "interaction"]
    assert found, result
    assert found[0].evidence["matched_by"] == "BDPM substance codes of the CIS"
    assert any("CIS 99999999" in " ".join(n.missing) for n in result.not_evaluated)


def test_drugs_known_only_by_cis_get_their_atc_rules_through_the_catalog(
    env: dict[str, str], platform: Platform
) -> None:
    """A benzodiazepine given by CIS only, with a history of falls: STOPP K1 still fires,
    its evidence saying the ATC code came from the catalog."""
    from services.analysis import analyze_bundle
    from services.medications import products

    fixture = Path(__file__).parent / "fixtures" / "bdpm-mini"
    imported = CliRunner().invoke(main, ["catalog", "import", str(fixture)])
    assert imported.exit_code == 0, imported.output
    cis = "61200859"  # ALPRAZOLAM VIATRIS 0,50 mg
    catalog_atc = products(platform.store, [cis])[cis].atc
    assert catalog_atc is not None
    assert catalog_atc.startswith("N05BA")
    bundle = _bundle("stopp-k1-benzo-falls")
    for entry in bundle["entry"]:
        concept = entry["resource"].get("medicationCodeableConcept")
        if concept is not None:
            concept["coding"] = [
                {"system": "https://smt.esante.gouv.fr/terminologie-cis", "code": cis}
            ]
    without_catalog = analyze_bundle(bundle)
    assert not [f for f in without_catalog.findings if f.rule == "STOPP v3 K1"]
    result = analyze_bundle(bundle, platform.store)
    found = [f for f in result.findings if f.rule == "STOPP v3 K1"]
    assert found, [f.rule for f in result.findings]
    drug = found[0].evidence["drugs"][0]
    assert drug["cis"] == cis
    assert drug["atc"] == catalog_atc
    assert drug["atc_source"].startswith("catalog")
    assert not any("code ATC" in " ".join(n.missing) for n in result.not_evaluated)
