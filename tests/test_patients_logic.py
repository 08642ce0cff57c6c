"""Pure rules of the patient record: NIR and INS, codes, name folding, validation, sealing."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from appliance.fieldcrypto import FieldIntegrityError, FieldKeys
from services.patients import logic
from services.patients.models import (
    Allergy,
    Clinical,
    Condition,
    Consent,
    Dispensing,
    GeneralPractitioner,
    Identity,
    IdentityVerification,
    Ins,
    LabResult,
    Measurement,
    Patient,
)

TODAY = date(2025, 3, 14)
NIR = "262087503203977"  # published example: 2 62 08 75 032 039, key 77
CORSICA_2A = "184122A12345697"  # 1 84 12 2A 123 456: counted as 19, key 97
CORSICA_2B = "290062B04512329"  # 2 90 06 2B 045 123: counted as 18, key 29
RPPS = "10000000009"


def identity(**changes: object) -> Identity:
    base = Identity(
        birth_family_name="DUPRÉ",
        given_names="Hélène Marie",
        birth_date=date(1962, 8, 15),
        sex="F",
        nir=NIR,
    )
    return msgspec.structs.replace(base, **changes)


def keys_of(errors: list[logic.FieldError]) -> list[str]:
    return [e.key for e in errors]


# --------------------------------------------------------------------------- NIR


@pytest.mark.parametrize(
    ("number", "key"),
    [
        ("2620875032039", 77),
        ("1891275125012", 82),
        ("184122A123456", 97),
        ("290062B045123", 29),
        ("184122a123456", 97),
    ],
)
def test_nir_key(number: str, key: int) -> None:
    assert logic.nir_key(number) == key


def test_nir_validation_accepts_good_numbers_with_spaces() -> None:
    for good in (NIR, "2 62 08 75 032 039 77", CORSICA_2A, CORSICA_2B, "2 90 06 2b 045 123 29"):
        assert logic.nir_is_valid(good), good


def test_nir_validation_refuses_wrong_key_and_bad_shapes() -> None:
    assert logic.nir_problem("262087503203978") == (
        "the key does not match the number (typing error?)"
    )
    # 2A counted as 20 (a common bug) gives another key, which must be refused.
    as_twenty = 97 - int("1841220123456") % 97
    assert not logic.nir_is_valid(f"184122A123456{as_twenty:02d}")
    assert not logic.nir_is_valid("290062B04512328")
    for bad in ("", "26208750320397", "2620875032039777", "962087503203977", "262082C03203977"):
        assert logic.nir_problem(logic.compact(bad)) is not None, bad


def test_nir_consistency_with_sex_and_birth_date() -> None:
    born = date(1962, 8, 15)
    assert logic.nir_consistency_problem(NIR, born, "F") is None
    assert logic.nir_consistency_problem(NIR, born, "I") is None
    assert "sex" in (logic.nir_consistency_problem(NIR, born, "M") or "")
    assert "year" in (logic.nir_consistency_problem(NIR, date(1963, 8, 1), "F") or "")
    assert "month" in (logic.nir_consistency_problem(NIR, date(1962, 9, 1), "F") or "")
    # Month 20+ stands for an unknown month: not compared.
    unknown_month = "1623099123456"
    assert logic.nir_consistency_problem(unknown_month + "00", date(1962, 5, 1), "M") is None


# --------------------------------------------------------------------------- other codes


def test_codes() -> None:
    assert logic.rpps_is_valid(RPPS)
    assert logic.rpps_is_valid("10123456781")
    assert not logic.rpps_is_valid("10000000008")
    assert not logic.rpps_is_valid("20000000007")
    for code in ("2160-0", "33914-3", "4548-4", "718-7"):
        assert logic.loinc_is_valid(code), code
    for code in ("2160-1", "2160", "21600", "ABC-1"):
        assert not logic.loinc_is_valid(code), code
    for code in ("E11", "E11.9", "N18.3", "I10", "Z99.21"):
        assert logic.icd10_is_valid(code), code
    for code in ("e11.9", "E1", "11.9", "E11.", "E11.12345"):
        assert not logic.icd10_is_valid(code), code
    assert logic.normalise_icd10("e119") == "E11.9"
    assert logic.normalise_icd10(" i10 ") == "I10"
    assert logic.cip13_is_valid("3400930000014")
    assert not logic.cip13_is_valid("3400930000015")


# --------------------------------------------------------------------------- folding


def test_fold_is_accent_case_and_punctuation_insensitive() -> None:
    assert logic.fold("Lætitia D'Éon-Bœuf") == "laetitia d eon boeuf"
    assert logic.fold("  ÉLODIE   ") == "elodie"
    assert logic.fold("Müller Straße") == "muller strasse"
    assert logic.search_terms("dupre hel") == ["dupre", "hel"]
    assert logic.names_folded(identity(used_family_name="Martin")) == ("dupre helene marie martin")


# --------------------------------------------------------------------------- validation


def test_valid_patient_has_no_errors() -> None:
    patient = Patient(
        identity=identity(),
        gp=GeneralPractitioner(name="Dr Martin", rpps=RPPS),
        consents=(Consent(kind="bpm_adhesion", status="granted", decided_on=date(2025, 1, 2)),),
        clinical=Clinical(
            conditions=(Condition(icd10="E11.9", note="diabète depuis 2010"),),
            allergies=(Allergy(substance="Amoxicilline", atc="J01CA04"),),
            lab_results=(
                LabResult(loinc="2160-0", value=88, unit="umol/L", observed_on=date(2025, 2, 1)),
            ),
            weight_kg=Measurement(value=64.5, observed_on=date(2025, 2, 1)),
            height_cm=Measurement(value=162, observed_on=date(2024, 1, 1)),
        ),
    )
    assert logic.validate_patient(logic.normalise_patient(patient), TODAY) == []


def test_every_broken_rule_is_reported_with_its_path() -> None:
    patient = Patient(
        identity=identity(nir="262087503203978", birth_date=date(1962, 8, 15)),
        gp=GeneralPractitioner(name="Dr X", rpps="10000000008"),
        consents=(Consent(kind="data_sharing", status="granted", decided_on=date(2026, 1, 1)),),
        clinical=Clinical(
            conditions=(Condition(icd10="diabetes"),),
            lab_results=(LabResult(loinc="2160-1", value=1, unit="%", observed_on=TODAY),),
            weight_kg=Measurement(value=900, observed_on=TODAY),
            height_cm=Measurement(value=15, observed_on=date(2030, 1, 1)),
        ),
    )
    errors = logic.validate_patient(logic.normalise_patient(patient), TODAY)
    assert keys_of(errors) == [
        "identity.nir",
        "gp.rpps",
        "consents.0.decided_on",
        "clinical.conditions.0.icd10",
        "clinical.lab_results.0.loinc",
        "clinical.weight_kg.value",
        "clinical.height_cm.value",
        "clinical.height_cm.observed_on",
    ]
    assert "key does not match" in errors[0].message
    assert all("262087503203978" not in e.message for e in errors)


def test_birth_date_rules() -> None:
    future = identity(birth_date=date(2030, 1, 1), nir=None)
    assert keys_of(logic.validate_patient(Patient(identity=future), TODAY)) == [
        "identity.birth_date"
    ]
    wrong_year = identity(birth_date=date(1963, 8, 15))
    errors = logic.validate_patient(Patient(identity=wrong_year), TODAY)
    assert keys_of(errors) == ["identity.nir"]
    assert "birth year" in errors[0].message


def test_ins_goes_with_the_identity_status() -> None:
    ins = Ins(matricule=NIR)
    checked = IdentityVerification(document="national_id_card", verified_on=date(2025, 1, 5))
    ok = [
        identity(),
        identity(status="recovered", ins=ins),
        identity(status="validated", verification=checked),
        identity(status="qualified", ins=ins, verification=checked, birth_place_code="75056"),
    ]
    for item in ok:
        assert logic.validate_patient(Patient(identity=item), TODAY) == [], item.status
    bad = {
        "provisional with INS": (identity(ins=ins), ["identity.ins"]),
        "qualified without document": (
            identity(status="qualified", ins=ins, birth_place_code="75056"),
            ["identity.verification"],
        ),
        "qualified without INS": (
            identity(status="qualified", verification=checked, birth_place_code="75056"),
            ["identity.ins"],
        ),
        "qualified without birth place": (
            identity(status="qualified", ins=ins, verification=checked),
            ["identity.birth_place_code"],
        ),
        "INS with a wrong key": (
            identity(status="recovered", ins=Ins(matricule="262087503203978")),
            ["identity.ins.matricule"],
        ),
    }
    for label, (item, expected) in bad.items():
        assert keys_of(logic.validate_patient(Patient(identity=item), TODAY)) == expected, label


def test_dispensing_rules() -> None:
    ok = Dispensing(dispensed_on=TODAY, quantity=2, cis="60234100")
    assert logic.validate_dispensing(ok, TODAY) == []
    assert (
        logic.validate_dispensing(
            Dispensing(dispensed_on=TODAY, quantity=1, label="Préparation magistrale"), TODAY
        )
        == []
    )
    nothing = Dispensing(dispensed_on=date(2030, 1, 1), quantity=1)
    assert keys_of(logic.validate_dispensing(nothing, TODAY)) == ["dispensed_on", "label"]
    bad = Dispensing(dispensed_on=TODAY, quantity=1, cis="123", cip13="3400930000015")
    assert keys_of(logic.validate_dispensing(bad, TODAY)) == ["cis", "cip13"]
    spaced = logic.normalise_dispensing(
        Dispensing(dispensed_on=TODAY, quantity=1, cip13="34009 3000001 4")
    )
    assert spaced.cip13 == "3400930000014"


def test_consent_in_force_is_the_latest() -> None:
    consents = (
        Consent(kind="bpm_adhesion", status="granted", decided_on=date(2024, 1, 1)),
        Consent(kind="data_sharing", status="refused", decided_on=date(2025, 1, 1)),
        Consent(kind="bpm_adhesion", status="withdrawn", decided_on=date(2024, 6, 1)),
    )
    latest = logic.consent_in_force(consents, "bpm_adhesion")
    assert latest is not None
    assert latest.status == "withdrawn"
    assert logic.consent_in_force((), "bpm_adhesion") is None


# --------------------------------------------------------------------------- sealing


def test_seal_and_unseal_round_trip_without_plaintext() -> None:
    crypto = logic.PatientCrypto.from_keys(FieldKeys(bytes(range(32))))
    patient = Patient(
        identity=identity(status="recovered", ins=Ins(matricule=NIR)),
        notes="Vit seule, aidée par sa fille",
        clinical=Clinical(
            conditions=(Condition(icd10="I10"), Condition(icd10="E11.9", note="mal équilibré")),
            allergies=(Allergy(substance="Pénicilline", note="urticaire en 2003"),),
        ),
    )
    stored = logic.seal_patient("p-1", "psn-x", patient, crypto)
    encoded = msgspec.json.encode(stored).decode()
    for secret in (NIR, "Vit seule", "mal équilibré", "urticaire"):
        assert secret not in encoded
    assert set(stored.sealed) == {
        "identity.nir",
        "identity.ins",
        "notes",
        "clinical.conditions.1.note",
        "clinical.allergies.0.note",
    }
    assert stored.blind["nir"] == crypto.nir_index.compute(NIR)
    assert stored.blind["ins"] == crypto.ins_index.compute(NIR)
    assert stored.blind["nir"] != stored.blind["ins"]
    assert logic.unseal_patient(stored, crypto) == patient

    moved = msgspec.structs.replace(stored, patient_id="p-2")
    with pytest.raises(FieldIntegrityError):
        logic.unseal_patient(moved, crypto)
    swapped = msgspec.structs.replace(
        stored, sealed={**stored.sealed, "notes": stored.sealed["clinical.conditions.1.note"]}
    )
    with pytest.raises(FieldIntegrityError):
        logic.unseal_patient(swapped, crypto)
