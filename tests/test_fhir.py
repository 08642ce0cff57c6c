"""FHIR R4: mappings round-trip, bundle import (collection, transaction), export, CLI, limits."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appliance.cli import main
from appliance.platform import Platform
from services.fhir import logic
from services.prescriptions.models import (
    Duration,
    MedicationStatement,
    Posology,
    Prescriber,
    Prescription,
    PrescriptionLine,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bdpm-mini"
RPPS = "10000000009"
NIR = "262087503203977"
TODAY = date.today()
PID = "0f0e0d0c-0b0a-4900-8800-000000000001"
RX_ID = "1f0e0d0c-0b0a-4900-8800-000000000002"

PRESCRIPTION = Prescription(
    patient_id=PID,
    prescriber=Prescriber(name="Dr Jean Martin", rpps=RPPS, specialty="cardiologie"),
    prescribed_on=date(2025, 3, 1),
    renewals=2,
    valid_until=date(2025, 5, 1),
    lines=(
        PrescriptionLine(
            cis="60234100",
            cip13="3400935955838",
            posology=Posology(
                dose=1,
                unit="comprimé",
                times_per_day=3,
                times_of_day=("morning", "noon", "evening"),
                duration=Duration(value=1, unit="month"),
            ),
            original_text="1 cp matin midi soir pendant 1 mois",
            substitutable=False,
        ),
        PrescriptionLine(
            label="Préparation magistrale",
            posology=Posology(dose=2.5, unit="mL", times_per_day=0.5, as_needed=True),
        ),
    ),
)


# --------------------------------------------------------------------------- pure round trips


def test_medication_request_round_trips_without_loss() -> None:
    requests = logic.medication_requests("rx-1", PRESCRIPTION, f"Patient/{PID}", "Practitioner/p")
    for request in requests:
        logic.validate_resource(request)
    lines = [logic.request_line(r) for r in requests]
    assert tuple(line for line, *_ in lines) == PRESCRIPTION.lines
    assert {(d, n, v) for _, d, n, v in lines} == {(date(2025, 3, 1), 2, date(2025, 5, 1))}
    practitioner = logic.practitioner(PRESCRIPTION.prescriber, "p")
    logic.validate_resource(practitioner)
    assert logic.prescriber(practitioner) == PRESCRIPTION.prescriber
    again = logic.medication_requests(
        "rx-1",
        Prescription(
            patient_id=PID,
            prescriber=logic.prescriber(practitioner),
            prescribed_on=lines[0][1],
            renewals=lines[0][2],
            valid_until=lines[0][3],
            lines=tuple(line for line, *_ in lines),
        ),
        f"Patient/{PID}",
        "Practitioner/p",
    )
    assert again == requests


def test_several_dosage_instructions_round_trip() -> None:
    """1 tablet in the morning and 2 in the evening, then a second step: one line."""
    taper = Prescription(
        patient_id=PID,
        prescriber=PRESCRIPTION.prescriber,
        prescribed_on=date(2025, 3, 1),
        lines=(
            PrescriptionLine(
                cis="60234100",
                posology=Posology(dose=1, unit="comprimé", times_of_day=("morning",), sequence=1),
                more_posologies=(
                    Posology(dose=2, unit="comprimé", times_of_day=("evening",), sequence=1),
                    Posology(
                        dose=1,
                        unit="comprimé",
                        times_of_day=("evening",),
                        sequence=2,
                        duration=Duration(value=7, unit="day"),
                    ),
                ),
                original_text="1 cp le matin et 2 le soir, puis 1 le soir pendant 7 jours",
            ),
        ),
    )
    (request,) = logic.medication_requests("rx-2", taper, f"Patient/{PID}", "Practitioner/p")
    logic.validate_resource(request)
    assert [d.get("sequence") for d in request["dosageInstruction"]] == [1, 1, 2]
    line, *_ = logic.request_line(request)
    assert line == taper.lines[0]


def test_medication_statement_round_trips_without_loss() -> None:
    statement = MedicationStatement(
        patient_id=PID,
        status="stopped",
        cis="60145580",
        label="Simvastatine",
        posology=Posology(dose=20, unit="mg", times_of_day=("bedtime",)),
        original_text="1 le soir",
        effective_start=date(2024, 1, 1),
        effective_end=date(2024, 12, 31),
        asserted_on=date(2025, 1, 10),
    )
    resource = logic.statement_resource("st-1", statement, f"Patient/{PID}")
    logic.validate_resource(resource)
    assert logic.statement(resource, PID) == statement
    assert logic.statement_resource("st-1", logic.statement(resource, PID), f"Patient/{PID}") == (
        resource
    )


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ({"resourceType": "Encounter", "status": "planned", "class": {}}, "not supported"),
        ({"resourceType": "Foo"}, "not supported"),
        ({"resourceType": "MedicationRequest", "intent": "order", "subject": {}}, "status"),
        (
            {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": "Patient/x"},
                "medicationCodeableConcept": {"text": "x"},
                "renderedDosageInstruction": "R5 only",
            },
            "renderedDosageInstruction",
        ),
        ({"resourceType": "Patient", "gender": "robot"}, "gender"),
        ("not an object", "no resource"),
    ],
)
def test_invalid_resources_are_rejected_with_a_reason(resource: Any, expected: str) -> None:
    with pytest.raises(logic.EntryError, match=expected):
        logic.validate_resource(resource)


def test_bad_codes_are_rejected() -> None:
    bad_atc = {"coding": [{"system": logic.ATC, "code": "not-atc"}], "text": "x"}
    with pytest.raises(logic.EntryError, match="ATC"):
        logic.concept_product(bad_atc)
    with pytest.raises(logic.EntryError, match="ICD-10"):
        logic.condition({"code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}})


# --------------------------------------------------------------------------- API and CLI


@pytest.fixture
def catalog(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["catalog", "import", str(FIXTURE)])
    assert result.exit_code == 0, result.output


@pytest.fixture
def headers(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('patients:read', 'patients:write')}"}


def _patient_body() -> dict[str, Any]:
    return {
        "identity": {
            "birth_family_name": "DUPRÉ",
            "used_family_name": "Lefèvre",
            "given_names": "Hélène Marie",
            "birth_date": "1962-08-15",
            "sex": "F",
            "nir": NIR,
        },
        "contact": {
            "phone": "+33 6 12 34 56 78",
            "address": {"lines": ["1 rue X"], "postal_code": "75001", "city": "Paris"},
        },
        "gp": {"name": "Dr Jean Martin", "rpps": RPPS},
        "clinical": {
            "conditions": [{"icd10": "E11.9", "label": "Diabète", "note": "mal équilibré"}],
            "allergies": [{"substance": "Amoxicilline", "atc": "J01CA04", "severity": "severe"}],
            "lab_results": [
                {"loinc": "2160-0", "value": 88, "unit": "umol/L", "observed_on": "2024-02-01"}
            ],
            "weight_kg": {"value": 64.5, "observed_on": "2024-02-01"},
        },
    }


def _seed(client: Any, headers: dict[str, str]) -> str:
    created = client.post("/api/v1/patients", json=_patient_body(), headers=headers)
    assert created.status_code == 201, created.text
    pid = str(created.json()["id"])
    rx = client.post(
        "/api/v1/prescriptions",
        json={
            "patient_id": pid,
            "prescriber": {"name": "Dr Martin", "rpps": RPPS},
            "prescribed_on": (TODAY - timedelta(days=5)).isoformat(),
            "renewals": 1,
            "lines": [
                {
                    "cis": "60234100",
                    "posology": {"dose": 1, "unit": "comprimé", "times_per_day": 3},
                    "original_text": "1 cp x3/j",
                },
                {
                    "cis": "61041232",
                    "posology": {"dose": 1, "unit": "inhalation", "times_per_day": 2},
                },
            ],
        },
        headers=headers,
    )
    assert rx.status_code == 201, rx.text
    dispensed = client.post(
        f"/api/v1/patients/{pid}/dispensings",
        json={"dispensed_on": TODAY.isoformat(), "quantity": 2, "cis": "60234100"},
        headers=headers,
    )
    assert dispensed.status_code == 201, dispensed.text
    return pid


def _moved(bundle: dict[str, Any], pid: str) -> dict[str, Any]:
    """The bundle as another appliance would send it: other patient id, no NIR."""
    moved: dict[str, Any] = json.loads(json.dumps(bundle).replace(pid, PID))
    for entry in moved["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource.pop("identifier")
        if resource["resourceType"] == "MedicationRequest":
            resource["groupIdentifier"]["value"] = RX_ID
    return moved


def _comparable(bundle: dict[str, Any]) -> list[Any]:
    """Resources without the ids a new store gives (dispensing lines get new ids)."""
    result = []
    for entry in bundle["entry"]:
        resource = copy.deepcopy(entry["resource"])
        if resource["resourceType"] == "MedicationDispense":
            resource.pop("id")
            resource.pop("identifier")
        result.append(resource)
    return sorted(result, key=lambda r: json.dumps(r, sort_keys=True))


def test_export_then_import_gives_the_same_data(
    catalog: None, client: Any, headers: dict[str, str], platform: Platform, tmp_path: Path
) -> None:
    pid = _seed(client, headers)
    exported = client.get(f"/api/v1/patients/{pid}/$everything", headers=headers)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("application/fhir+json")
    bundle = exported.json()
    kinds = sorted({e["resource"]["resourceType"] for e in bundle["entry"]})
    assert kinds == [
        "AllergyIntolerance",
        "Condition",
        "MedicationDispense",
        "MedicationRequest",
        "Observation",
        "Patient",
        "Practitioner",
    ]
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert {"system": logic.INS_NIR, "value": NIR} in [
        {k: i[k] for k in ("system", "value")} for i in patient["identifier"]
    ]
    atc = [
        c
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
        for c in e["resource"]["medicationCodeableConcept"]["coding"]
    ]
    assert {"system": logic.ATC, "code": "N02BE01"} in atc

    # Re-importing into the same store changes nothing.
    same = client.post("/api/v1/fhir", content=json.dumps(bundle), headers=headers)
    assert same.status_code == 200, same.text
    assert {e["outcome"] for e in same.json()["entries"]} == {"unchanged", "referenced"}

    audit = [(e.action, e.object_type, e.object_id) for e in platform.audit.entries()]
    assert ("fhir_export", "patient", pid) in audit
    assert ("fhir_import", "patient", pid) in audit
    assert ("fhir_import", "fhir_bundle", "collection") in audit


def _normalised(bundle: dict[str, Any]) -> list[str]:
    """Resources without the ids a store chooses (line ids, dispensing ids, references)."""
    result = []
    for entry in bundle["entry"]:
        resource = copy.deepcopy(entry["resource"])
        kind = resource["resourceType"]
        if kind in ("MedicationRequest", "MedicationDispense", "Practitioner"):
            resource.pop("id")
            resource.pop("requester", None)
            if kind != "Practitioner":
                resource.pop("identifier", None)
        result.append(json.dumps(resource, sort_keys=True))
    return sorted(result)


def test_export_then_import_into_another_store_with_the_cli(
    catalog: None, client: Any, headers: dict[str, str], platform: Platform, tmp_path: Path
) -> None:
    pid = _seed(client, headers)
    exported = CliRunner().invoke(main, ["fhir", "export", pid, "--output", str(tmp_path / "a")])
    assert exported.exit_code == 0, exported.output
    moved = _moved(json.loads((tmp_path / "a").read_text()), pid)
    moved["type"] = "transaction"
    statement = MedicationStatement(
        patient_id=PID,
        cis="60145580",
        label="Simvastatine",
        posology=Posology(dose=20.0, unit="mg", times_of_day=("bedtime",)),
        effective_start=date(2024, 1, 1),
    )
    statement_id = "2f0e0d0c-0b0a-4900-8800-000000000003"
    resource = logic.statement_resource(statement_id, statement, f"Patient/{PID}")
    moved["entry"].append({"fullUrl": f"MedicationStatement/{statement_id}", "resource": resource})
    (tmp_path / "b.json").write_text(json.dumps(moved))
    imported = CliRunner().invoke(main, ["fhir", "import", str(tmp_path / "b.json")])
    assert imported.exit_code == 0, imported.output
    report = json.loads(imported.output)
    assert report["rejected"] == 0
    assert report["stored"] is True
    again = CliRunner().invoke(main, ["fhir", "export", PID])
    assert again.exit_code == 0, again.output
    assert _normalised(json.loads(again.output)) == _normalised(moved)
    cli = [(e.actor, e.action, e.object_type, e.object_id) for e in platform.audit.entries()]
    assert ("system:cli", "fhir_import", "patient", PID) in cli
    assert ("system:cli", "fhir_import", "prescription", RX_ID) in cli
    assert ("system:cli", "fhir_export", "patient", pid) in cli


def test_rejected_transaction_stores_nothing(
    catalog: None, client: Any, headers: dict[str, str], platform: Platform
) -> None:
    pid = _seed(client, headers)
    bundle = client.get(f"/api/v1/patients/{pid}/$everything", headers=headers).json()
    moved = _moved(bundle, pid)
    moved["type"] = "transaction"
    moved["entry"].append(
        {
            "resource": {
                "resourceType": "Condition",
                "subject": {"reference": f"Patient/{PID}"},
                "code": {"coding": [{"system": logic.ICD10, "code": "NOPE"}]},
            }
        }
    )
    moved["entry"].append({"resource": {"resourceType": "Encounter"}})
    response = client.post("/api/v1/fhir", content=json.dumps(moved), headers=headers)
    assert response.status_code == 422, response.text
    report = response.json()["report"]
    outcomes = [e["outcome"] for e in report["entries"]]
    assert outcomes[-2:] == ["rejected", "rejected"]
    assert set(outcomes[:-2]) == {"not_stored"}
    assert "icd10" in report["entries"][-2]["message"]
    assert "not supported" in report["entries"][-1]["message"]
    assert client.get(f"/api/v1/patients/{PID}", headers=headers).status_code == 404

    moved["type"] = "collection"
    partial = client.post("/api/v1/fhir", content=json.dumps(moved), headers=headers)
    assert partial.status_code == 200, partial.text
    assert partial.json()["rejected"] == 2
    assert client.get(f"/api/v1/patients/{PID}", headers=headers).status_code == 200


def test_bad_bundles_and_limits(
    catalog: None, client: Any, headers: dict[str, str], tmp_path: Path
) -> None:
    assert client.post("/api/v1/fhir", content=b"{", headers=headers).status_code == 400
    not_bundle = client.post("/api/v1/fhir", json={"resourceType": "Patient"}, headers=headers)
    assert not_bundle.status_code == 400
    searchset = client.post(
        "/api/v1/fhir", json={"resourceType": "Bundle", "type": "searchset"}, headers=headers
    )
    assert searchset.status_code == 400
    big = b'{"resourceType":"Bundle","type":"collection","entry":[' + b" " * (50 * 2**20) + b"]}"
    assert client.post("/api/v1/fhir", content=big, headers=headers).status_code == 413
    path = tmp_path / "big.json"
    path.write_bytes(big)
    result = CliRunner().invoke(main, ["fhir", "import", str(path)])
    assert result.exit_code == 2
    assert "MB limit" in result.output
    zero = logic.medication_requests(RX_ID, PRESCRIPTION, f"Patient/{PID}", "Practitioner/p")[0]
    zero["dosageInstruction"][0]["timing"]["repeat"]["period"] = 0
    person = {
        "resourceType": "Patient",
        "id": PID,
        "name": [{"family": "X", "given": ["Y"]}],
        "gender": "male",
        "birthDate": "1950-01-01",
    }
    practitioner = logic.practitioner(PRESCRIPTION.prescriber, "p")
    entries = [{"resource": zero}, 7, {"resource": person}, {"resource": practitioner}]
    odd = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    answer = client.post("/api/v1/fhir", json=odd, headers=headers)
    assert answer.status_code == 200, answer.text
    messages = [e["message"] for e in answer.json()["entries"]]
    assert "could not be read" in messages[0]
    assert "no resource" in messages[1]
    missing = CliRunner().invoke(main, ["fhir", "export", "00000000-0000-4000-8000-0000000000ff"])
    assert missing.exit_code == 2
    assert "no patient" in missing.output
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": {"resourceType": "Foo"}}],
            }
        )
    )
    rejected = CliRunner().invoke(main, ["fhir", "import", str(bad)])
    assert rejected.exit_code == 5
    assert "nothing stored" in rejected.output


def test_transaction_from_another_system_with_urn_uuid_references(
    catalog: None, client: Any, headers: dict[str, str], platform: Platform
) -> None:
    patient_url, doctor_url = "urn:uuid:7c1a", "urn:uuid:7c1b"
    today = TODAY.isoformat()
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [
                        {
                            "type": {
                                "coding": [{"system": logic.FR_CORE_ID_TYPE, "code": "INS-NIR"}]
                            },
                            "system": logic.INS_NIR,
                            "value": NIR,
                        }
                    ],
                    "name": [{"use": "official", "family": "DUPRÉ", "given": ["Hélène"]}],
                    "gender": "female",
                    "birthDate": "1962-08-15",
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": doctor_url,
                "resource": {
                    "resourceType": "Practitioner",
                    "identifier": [{"system": logic.RPPS, "value": RPPS}],
                    "name": [{"family": "Martin", "given": ["Jean"], "prefix": ["Dr"]}],
                },
            },
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": patient_url},
                    "requester": {"reference": doctor_url},
                    "authoredOn": today,
                    "medicationCodeableConcept": {
                        "coding": [{"system": logic.CIS, "code": "60234100"}]
                    },
                    "dosageInstruction": [{"text": "1 cp si douleur", "asNeededBoolean": True}],
                }
            },
            {
                "resource": {
                    "resourceType": "MedicationDispense",
                    "status": "completed",
                    "subject": {"reference": patient_url},
                    "medicationCodeableConcept": {
                        "coding": [{"system": logic.CIP13, "code": "3400935955838"}]
                    },
                    "quantity": {"value": 1},
                    "whenHandedOver": today,
                }
            },
        ],
    }
    response = client.post("/api/v1/fhir", json=bundle, headers=headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert [e["outcome"] for e in report["entries"]] == [
        "created",
        "referenced",
        "created",
        "created",
    ]
    pid = report["entries"][0]["target"].removeprefix("patient/")
    record = client.get(f"/api/v1/patients/{pid}", headers=headers).json()
    assert record["identity"]["ins"] == {"matricule": NIR, "oid": "1.2.250.1.213.1.4.8"}
    assert record["identity"]["status"] == "recovered"
    prescriptions = client.get(f"/api/v1/patients/{pid}/prescriptions", headers=headers).json()
    assert prescriptions[0]["prescriber"] == {
        "name": "Dr Jean Martin",
        "rpps": RPPS,
        "specialty": None,
    }
    assert prescriptions[0]["lines"][0]["posology"]["as_needed"] is True
    # The same patient again, now with a used name: matched by INS, updated.
    bundle["entry"][0]["resource"]["name"].append({"use": "usual", "family": "Lefèvre"})
    single = {"resourceType": "Bundle", "type": "collection", "entry": bundle["entry"][0:1]}
    again = client.post("/api/v1/fhir", json=single, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["entries"][0] == {
        "index": 0,
        "resource_type": "Patient",
        "full_url": patient_url,
        "outcome": "updated",
        "target": f"patient/{pid}",
        "message": None,
    }


def test_batch_with_contained_and_referenced_medications(
    catalog: None, client: Any, headers: dict[str, str], platform: Platform
) -> None:
    """A batch stores each valid entry; a medication may be a contained Medication or a
    Medication entry of the bundle; a dangling reference rejects its entry only."""
    patient_url, doctor_url, drug_url = "urn:uuid:9a01", "urn:uuid:9a02", "urn:uuid:9a03"
    today = TODAY.isoformat()

    def request(medication: dict[str, Any], group: str, **more: Any) -> dict[str, Any]:
        return {
            "resource": {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": patient_url},
                "requester": {"reference": doctor_url},
                "authoredOn": today,
                "groupIdentifier": {"system": "urn:test", "value": group},
                **medication,
                **more,
            }
        }

    paracetamol = {"coding": [{"system": logic.CIS, "code": "60234100"}], "text": "Doliprane"}
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": "BATCH", "given": ["Lucie"]}],
                    "gender": "female",
                    "birthDate": "1940-02-03",
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": doctor_url,
                "resource": {
                    "resourceType": "Practitioner",
                    "identifier": [{"system": logic.RPPS, "value": RPPS}],
                    "name": [{"family": "Martin", "given": ["Jean"]}],
                },
            },
            {"fullUrl": drug_url, "resource": {"resourceType": "Medication", "code": paracetamol}},
            request(
                {"medicationReference": {"reference": "#med"}},
                "rx-a",
                contained=[{"resourceType": "Medication", "id": "med", "code": paracetamol}],
                dosageInstruction=[
                    {
                        "sequence": 1,
                        "text": "1 le matin",
                        "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "comprimé"}}],
                        "timing": {"repeat": {"when": ["MORN"]}},
                    },
                    {
                        "sequence": 1,
                        "doseAndRate": [{"doseQuantity": {"value": 2, "unit": "comprimé"}}],
                        "timing": {"repeat": {"when": ["EVE"]}},
                    },
                ],
            ),
            request({"medicationReference": {"reference": drug_url}}, "rx-b"),
            request({"medicationReference": {"reference": "Medication/absent"}}, "rx-c"),
        ],
    }
    response = client.post("/api/v1/fhir", json=bundle, headers=headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["bundle_type"] == "batch"
    assert [e["outcome"] for e in report["entries"]] == [
        "created",
        "referenced",
        "referenced",
        "created",
        "created",
        "rejected",
    ]
    assert "names no Medication" in report["entries"][5]["message"]
    pid = report["entries"][0]["target"].removeprefix("patient/")
    prescriptions = client.get(f"/api/v1/patients/{pid}/prescriptions", headers=headers).json()
    by_cis = sorted(p["lines"][0]["cis"] for p in prescriptions)
    assert by_cis == ["60234100", "60234100"]
    split = next(p for p in prescriptions if p["lines"][0]["more_posologies"])
    line = split["lines"][0]
    assert line["posology"]["times_of_day"] == ["morning"]
    assert line["more_posologies"][0]["dose"] == 2
    # 3 x 1000 mg a day together: checked against the RCP maximum, within it.
    assert split["validation"]["posology_range"][0].startswith("checked: 3000 mg/day within")


def test_export_marks_prescription_lines_active_only_while_the_treatment_runs(
    catalog: None, client: Any, headers: dict[str, str]
) -> None:
    pid = _seed(client, headers)  # prescribed five days ago, no duration: still running
    old = client.post(
        "/api/v1/prescriptions",
        json={
            "patient_id": pid,
            "prescriber": {"name": "Dr Martin", "rpps": RPPS},
            "prescribed_on": (TODAY - timedelta(days=400)).isoformat(),
            "lines": [
                {
                    "cis": "60234100",
                    "posology": {
                        "dose": 1,
                        "unit": "comprimé",
                        "times_per_day": 2,
                        "duration": {"value": 7, "unit": "day"},
                    },
                }
            ],
        },
        headers=headers,
    )
    assert old.status_code == 201, old.text
    bundle = client.get(f"/api/v1/patients/{pid}/$everything", headers=headers).json()
    active = client.get(
        f"/api/v1/patients/{pid}/prescriptions?active_only=true", headers=headers
    ).json()
    running = {str(rx["id"]) for rx in active}
    requests = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
    ]
    statuses = {(r["groupIdentifier"]["value"], r["status"]) for r in requests}
    assert statuses == {
        (group, "active" if group in running else "completed")
        for group in {r["groupIdentifier"]["value"] for r in requests}
    }
    assert str(old.json()["id"]) not in running
    assert {status for _, status in statuses} == {"active", "completed"}
