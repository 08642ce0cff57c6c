"""Patient records over HTTP: create, read, search, replace, history, dispensing, pseudonyms;
field encryption at rest and the audit of every read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from appliance.config import Settings
from appliance.keys import FIELD_KEY
from appliance.platform import Platform
from services.patients import dispensing_lines

NIR = "262087503203977"
NIR_2A = "184122A12345697"
RPPS = "10000000009"
NOTE = "Vit seule depuis le décès de son mari"
CONDITION_NOTE = "Diabète mal équilibré sous metformine"
PATIENTS = "/api/v1/patients"
ALL = ("patients:read", "patients:write")


@pytest.fixture
def headers(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(*ALL)}"}


def helene(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "identity": {
            "birth_family_name": "DUPRÉ",
            "used_family_name": "Lefèvre",
            "given_names": "Hélène Marie",
            "birth_date": "1962-08-15",
            "sex": "F",
            "nir": "2 62 08 75 032 039 77",
        },
        "contact": {"phone": "+33 6 12 34 56 78", "email": "helene@example.org"},
        "gp": {"name": "Dr Jean Martin", "rpps": RPPS},
        "coverage": {"amo": {"regime": "01", "caisse": "751"}, "ald": [{"number": 8}]},
        "consents": [{"kind": "bpm_adhesion", "status": "granted", "decided_on": "2024-01-05"}],
        "clinical": {
            "conditions": [{"icd10": "e119", "note": CONDITION_NOTE}],
            "allergies": [{"substance": "Amoxicilline", "atc": "J01CA04"}],
            "lab_results": [
                {"loinc": "2160-0", "value": 88, "unit": "umol/L", "observed_on": "2024-02-01"}
            ],
            "weight_kg": {"value": 64.5, "observed_on": "2024-02-01"},
        },
        "notes": NOTE,
    }
    body.update(changes)
    return body


def other_patient(family: str, given: str, born: str, nir: str | None = None) -> dict[str, Any]:
    identity: dict[str, Any] = {
        "birth_family_name": family,
        "given_names": given,
        "birth_date": born,
        "sex": "M",
    }
    if nir:
        identity["nir"] = nir
    return {"identity": identity}


def create(client: Any, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(PATIENTS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def patient_audit(platform: Platform) -> list[tuple[str, str, str, str]]:
    return [
        (e.action, e.object_id, e.purpose, e.outcome)
        for e in platform.audit.entries(limit=1000)
        if e.object_type == "patient"
    ]


def test_create_read_update_history(
    client: Any, headers: dict[str, str], platform: Platform
) -> None:
    created = create(client, headers, helene())
    pid = created["id"]
    assert created["version"] == 1
    assert created["identity"]["nir"] == NIR, "spaces removed"
    assert created["clinical"]["conditions"][0] == {
        "icd10": "E11.9",
        "label": None,
        "onset": None,
        "status": "active",
        "note": CONDITION_NOTE,
    }
    assert created["notes"] == NOTE
    assert created["recorded_by"] == "user-test"

    read = client.get(f"{PATIENTS}/{pid}", headers=headers)
    assert read.status_code == 200
    assert read.json() == created

    body = helene(notes="Suivi par infirmière à domicile")
    body["expected_version"] = 1
    updated = client.put(f"{PATIENTS}/{pid}", json=body, headers=headers)
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    stale = client.put(f"{PATIENTS}/{pid}", json=body, headers=headers)
    assert stale.status_code == 409
    assert stale.json()["latest_version"] == 2

    history = client.get(f"{PATIENTS}/{pid}/history", headers=headers).json()
    assert [(v["version"], v["notes"]) for v in history] == [
        (1, NOTE),
        (2, "Suivi par infirmière à domicile"),
    ]
    assert patient_audit(platform) == [
        ("create", pid, "care", "success"),
        ("read", pid, "care", "success"),
        ("update", pid, "care", "success"),
        ("update", pid, "care", "conflict"),
        ("history", pid, "care", "success"),
    ]


def test_every_read_is_audited_without_names_or_nir(
    client: Any, headers: dict[str, str], platform: Platform
) -> None:
    pid = create(client, headers, helene())["id"]
    client.get(f"{PATIENTS}/{pid}", headers=headers)
    client.get(PATIENTS, params={"q": "dupre"}, headers=headers)
    client.get(PATIENTS, params={"nir": NIR}, headers=headers)
    client.get(f"{PATIENTS}/{pid}/history", headers=headers)
    client.get(f"{PATIENTS}/{pid}/dispensings", headers=headers)
    client.get(PATIENTS, params={"q": "nobody"}, headers=headers)
    missing = "00000000-0000-4000-8000-000000000000"
    assert client.get(f"{PATIENTS}/{missing}", headers=headers).status_code == 404
    reads = [entry for entry in patient_audit(platform) if entry[0] != "create"]
    assert reads == [
        ("read", pid, "care", "success"),
        ("search", pid, "care", "success"),
        ("search", pid, "care", "success"),
        ("history", pid, "care", "success"),
        ("read_dispensings", pid, "care", "success"),
        ("search", "", "care", "no_match"),
        ("read", missing, "care", "not_found"),
    ]
    entries = platform.audit.entries(limit=1000)
    assert all(e.actor == "user-test" for e in entries)
    dump = repr(entries).lower()
    for forbidden in (NIR.lower(), "dupr", "lefèvre", "lefevre", "hélène", "helene", "metformine"):
        assert forbidden not in dump
    assert platform.audit.verify().ok


def test_sensitive_fields_are_encrypted_at_rest(
    client: Any, headers: dict[str, str], platform: Platform, settings: Settings
) -> None:
    pid = create(client, headers, helene())["id"]
    # 1. The database files (SQLCipher, WAL included) never show the plaintext.
    raw = b"".join(
        path.read_bytes()
        for path in settings.data_path.iterdir()
        if path.name.startswith("hygie.db")
    )
    for plain in (NIR, "DUPR", "Hélène", "Lefèvre", NOTE[:20], CONDITION_NOTE[:20]):
        assert plain.encode() not in raw
    # 2. Inside the decrypted database, NIR and notes are field ciphertexts.
    rows = platform.store.db.execute("SELECT data FROM patients_versions").fetchall()
    assert len(rows) == 1
    data = rows[0][0]
    assert "Hélène" in data, "names are not field-encrypted (search needs them)"
    for plain in (NIR, "2 62 08", NOTE, CONDITION_NOTE):
        assert plain not in data
    assert '"identity.nir":"hf1.' in data
    assert '"notes":"hf1.' in data
    search = platform.store.db.execute("SELECT * FROM patient_search").fetchall()
    assert pid in str(search)
    assert NIR not in str(search)


def test_search_by_name_birth_date_nir_and_ins(client: Any, headers: dict[str, str]) -> None:
    helene_id = create(client, headers, helene())["id"]
    ins = {"matricule": NIR_2A}
    corsican = other_patient("Santoni", "Ghjuvanni", "1984-12-01", NIR_2A)
    corsican["identity"].update({"status": "recovered", "ins": ins})
    santoni_id = create(client, headers, corsican)["id"]
    dupont_id = create(client, headers, other_patient("Dupont", "Hélio", "1962-08-15"))["id"]

    def ids(**params: Any) -> list[str]:
        response = client.get(PATIENTS, params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()]

    assert ids(q="dupre") == [helene_id]
    assert ids(q="DUPRÉ") == [helene_id]
    assert ids(q="lefevre") == [helene_id], "used name is searched too"
    assert ids(q="hel") == [dupont_id, helene_id]
    assert ids(q="dup hél") == [dupont_id, helene_id]
    assert ids(q="dup marie") == [helene_id]
    assert ids(birth_date="1962-08-15") == [dupont_id, helene_id]
    assert ids(q="hel", birth_date="1962-08-15", limit=1) == [dupont_id]
    assert ids(nir="2 62 08 75 032 039 77") == [helene_id]
    assert ids(nir=NIR_2A.lower()) == [santoni_id]
    assert ids(ins=NIR_2A) == [santoni_id]
    assert ids(ins=NIR) == []
    assert ids(q="zzz") == []
    summary = client.get(PATIENTS, params={"q": "santoni"}, headers=headers).json()[0]
    assert "nir" not in summary
    assert summary["identity_status"] == "recovered"

    for params in ({}, {"q": " - "}, {"nir": "262087503203978"}, {"limit": 101, "q": "a"}):
        refused = client.get(PATIENTS, params=params, headers=headers)
        assert refused.status_code == 400, params
        assert refused.headers["content-type"].startswith("application/problem+json")


def test_validation_errors_are_per_field(client: Any, headers: dict[str, str]) -> None:
    body = helene()
    body["identity"]["nir"] = "262087503203978"
    body["gp"]["rpps"] = "10000000008"
    body["clinical"]["lab_results"][0]["loinc"] = "2160-1"
    body["clinical"]["weight_kg"]["value"] = 900
    response = client.post(PATIENTS, json=body, headers=headers)
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == "urn:hygie:problem:validation"
    assert [e["key"] for e in problem["errors"]] == [
        "identity.nir",
        "gp.rpps",
        "clinical.lab_results.0.loinc",
        "clinical.weight_kg.value",
    ]
    assert NIR[:-2] not in response.text

    future = helene()
    future["identity"]["birth_date"] = "2999-01-01"
    assert client.post(PATIENTS, json=future, headers=headers).status_code == 400
    unknown = helene(favourite_colour="blue")
    response = client.post(PATIENTS, json=unknown, headers=headers)
    assert response.status_code == 400
    assert "favourite_colour" in response.text
    assert client.post(PATIENTS, json={"identity": {}}, headers=headers).status_code == 400


def test_duplicate_nir_is_refused(client: Any, headers: dict[str, str]) -> None:
    first = create(client, headers, helene())["id"]
    again = client.post(PATIENTS, json=helene(), headers=headers)
    assert again.status_code == 409
    assert again.json()["type"] == "urn:hygie:problem:duplicate-nir"
    assert again.json()["other_patient_id"] == first
    # Re-saving the same patient with its own NIR is fine.
    body = helene(expected_version=1)
    assert client.put(f"{PATIENTS}/{first}", json=body, headers=headers).status_code == 200


def test_scopes_are_enforced(client: Any, token_for: Callable[..., str]) -> None:
    writer = {"Authorization": f"Bearer {token_for(*ALL)}"}
    pid = create(client, writer, helene())["id"]
    reader = {"Authorization": f"Bearer {token_for('patients:read')}"}
    other = {"Authorization": f"Bearer {token_for('workstations:read')}"}
    assert client.get(f"{PATIENTS}/{pid}").status_code == 401
    assert client.get(f"{PATIENTS}/{pid}", headers=other).status_code == 403
    assert client.get(f"{PATIENTS}/{pid}", headers=reader).status_code == 200
    assert client.post(PATIENTS, json=helene(), headers=reader).status_code == 403


def test_pseudonym_and_reidentification(
    client: Any, token_for: Callable[..., str], platform: Platform
) -> None:
    headers = {"Authorization": f"Bearer {token_for(*ALL)}"}
    pid = create(client, headers, helene())["id"]
    pseudonym = client.get(f"{PATIENTS}/{pid}/pseudonym", headers=headers).json()["pseudonym"]
    assert pseudonym.startswith("psn-")
    assert pid not in pseudonym
    client.put(f"{PATIENTS}/{pid}", json=helene(expected_version=1), headers=headers)
    again = client.get(f"{PATIENTS}/{pid}/pseudonym", headers=headers).json()["pseudonym"]
    assert again == pseudonym, "stable across versions"

    assert client.get(f"/api/v1/pseudonyms/{pseudonym}", headers=headers).status_code == 403
    reidentifier = {"Authorization": f"Bearer {token_for('patients:reidentify')}"}
    found = client.get(f"/api/v1/pseudonyms/{pseudonym}", headers=reidentifier)
    assert found.status_code == 200
    assert found.json() == {"patient_id": pid, "pseudonym": pseudonym}
    unknown = "psn-" + "a" * 32
    assert client.get(f"/api/v1/pseudonyms/{unknown}", headers=reidentifier).status_code == 404
    bad = client.get("/api/v1/pseudonyms/not-a-pseudonym", headers=reidentifier)
    assert bad.status_code == 400
    audit = patient_audit(platform)
    assert ("pseudonymise", pid, "care", "success") in audit
    assert audit[-2:] == [
        ("reidentify", pid, "reidentification", "success"),
        ("reidentify", unknown, "reidentification", "not_found"),
    ]


def test_dispensing_history(client: Any, headers: dict[str, str], platform: Platform) -> None:
    pid = create(client, headers, helene())["id"]
    url = f"{PATIENTS}/{pid}/dispensings"
    lines = [
        {"dispensed_on": "2024-03-01", "quantity": 2, "cis": "60234100", "cip13": "3400930000014"},
        {"dispensed_on": "2024-05-10", "quantity": 1, "label": "Préparation magistrale"},
        {"dispensed_on": "2024-04-02", "quantity": 3, "cis": "61266250"},
    ]
    made = []
    for line in lines:
        response = client.post(url, json=line, headers=headers)
        assert response.status_code == 201, response.text
        made.append(response.json())
    listed = client.get(url, headers=headers).json()
    assert [item["dispensed_on"] for item in listed] == ["2024-05-10", "2024-04-02", "2024-03-01"]
    since = client.get(url, params={"since": "2024-04-01"}, headers=headers).json()
    assert len(since) == 2
    public = dispensing_lines(platform.store, pid, since=date(2024, 4, 1))
    assert [(line.cis, line.label) for line in public] == [
        (None, "Préparation magistrale"),
        ("61266250", None),
    ]

    target = made[2]["id"]
    voided = client.delete(f"{url}/{target}", params={"expected_version": 1}, headers=headers)
    assert voided.status_code == 200, voided.text
    assert voided.json()["version"] == 2
    assert [i["id"] for i in client.get(url, headers=headers).json()] == [
        made[1]["id"],
        made[0]["id"],
    ]
    assert (
        client.delete(
            f"{url}/{target}", params={"expected_version": 2}, headers=headers
        ).status_code
        == 404
    )

    for bad in (
        {"dispensed_on": "2024-03-01", "quantity": 1},
        {"dispensed_on": "1950-03-01", "quantity": 1, "cis": "60234100"},
        {"dispensed_on": "2024-03-01", "quantity": 0, "cis": "60234100"},
    ):
        assert client.post(url, json=bad, headers=headers).status_code == 400, bad
    missing = f"{PATIENTS}/00000000-0000-4000-8000-000000000000/dispensings"
    assert client.post(missing, json=lines[0], headers=headers).status_code == 404
    actions = [(a, outcome) for a, _, _, outcome in patient_audit(platform)]
    assert actions.count(("dispense", "success")) == 3
    assert ("void_dispensing", "success") in actions


def test_wrong_field_key_is_a_clear_503(
    client: Any, headers: dict[str, str], settings: Settings
) -> None:
    pid = create(client, headers, helene())["id"]
    (settings.key_path / FIELD_KEY).write_text("11" * 32 + "\n")
    del client.app.state["patients_crypto"]
    response = client.get(f"{PATIENTS}/{pid}", headers=headers)
    assert response.status_code == 503
    assert response.json()["type"] == "urn:hygie:problem:field-key-mismatch"
    assert NIR not in response.text
    (settings.key_path / FIELD_KEY).unlink()
    del client.app.state["patients_crypto"]
    missing = client.get(f"{PATIENTS}/{pid}", headers=headers)
    assert missing.status_code == 503
    assert missing.json()["type"] == "urn:hygie:problem:field-key-unavailable"


def test_birth_date_today_is_accepted(client: Any, headers: dict[str, str]) -> None:
    born = date.today().isoformat()
    assert (
        client.post(PATIENTS, json=other_patient("Bébé", "Léa", born), headers=headers).status_code
        == 201
    )
