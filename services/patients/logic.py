"""Pure rules of the patient record: identifiers, validation, name folding, sealing.

Nothing here does I/O, so every rule is tested directly. The API normalises a record
(:func:`normalise_patient`), validates it against today's date (:func:`validate_patient`),
then seals it for storage (:func:`seal_patient`): NIR, INS and every free-text note become
AES-GCM ciphertexts bound to the patient id and the field path, and NIR/INS get a blind
index for exact search.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date

import msgspec

from appliance.fieldcrypto import BlindIndex, FieldCipher, FieldKeys, Pseudonymizer
from services.patients.models import (
    Allergy,
    Condition,
    Consent,
    ConsentKind,
    Dispensing,
    FieldError,
    Identity,
    Ins,
    Patient,
    StoredPatient,
)

# --------------------------------------------------------------------------- identifiers

_NIR = re.compile(r"^[1-8][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{8}$")
_RPPS = re.compile(r"^1[0-9]{10}$")
_ICD10 = re.compile(r"^[A-Z][0-9]{2}(?:\.[0-9A-Z]{1,4})?$")
_LOINC = re.compile(r"^[0-9]{1,7}-[0-9]$")
_ATC = re.compile(r"^[A-Z](?:[0-9]{2}(?:[A-Z](?:[A-Z](?:[0-9]{2})?)?)?)?$")
_CIS = re.compile(r"^[0-9]{8}$")
_CIP13 = re.compile(r"^[0-9]{13}$")
_INSEE_PLACE = re.compile(r"^(?:[0-9]{5}|2[AB][0-9]{3})$")

MIN_WEIGHT_KG, MAX_WEIGHT_KG = 0.3, 400.0
MIN_HEIGHT_CM, MAX_HEIGHT_CM = 20.0, 260.0
OLDEST_BIRTH = date(1890, 1, 1)


def compact(value: str) -> str:
    """Identifier as typed at the counter (spaces, lower case) to its canonical form."""
    return "".join(value.split()).upper()


def nir_key(first13: str) -> int:
    """The NIR key: 97 minus the 13-character number modulo 97.

    Corsica (département 2A/2B) is counted as 19/18, the rule INSEE published when the
    letters replaced 20 in 1976.
    """
    number = int(first13.upper().replace("2A", "19").replace("2B", "18"))
    return 97 - number % 97


def nir_problem(value: str) -> str | None:
    """Why ``value`` (canonical form) is not a NIR, or ``None`` when it is one."""
    if not _NIR.fullmatch(value):
        return "must be 13 characters (digits, 2A or 2B for Corsica) and a 2-digit key"
    if nir_key(value[:13]) != int(value[13:]):
        return "the key does not match the number (typing error?)"
    return None


def nir_is_valid(value: str) -> bool:
    return nir_problem(compact(value)) is None


def nir_consistency_problem(nir: str, birth_date: date, sex: str) -> str | None:
    """NIR digits against the identity: sex (odd men, even women), birth year and month.

    Months 20 and above stand for an unknown or special month and are not compared.
    """
    if sex in ("M", "F") and (int(nir[0]) % 2 == 1) != (sex == "M"):
        return "its first digit does not match the sex"
    if int(nir[1:3]) != birth_date.year % 100:
        return "its birth year does not match the birth date"
    month = int(nir[3:5])
    if 1 <= month <= 12 and month != birth_date.month:
        return "its birth month does not match the birth date"
    return None


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check over digits whose last one is the key (RPPS, LOINC)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def rpps_is_valid(value: str) -> bool:
    """RPPS: 11 digits starting with 1, the last one a Luhn key."""
    return bool(_RPPS.fullmatch(value)) and luhn_valid(value)


def loinc_is_valid(value: str) -> bool:
    """LOINC code ``NNNNN-C``: its check digit is the Luhn key of the number."""
    if not _LOINC.fullmatch(value):
        return False
    number, check = value.split("-")
    return luhn_valid(number + check)


def icd10_is_valid(value: str) -> bool:
    """ICD-10 (CIM-10) code shape: ``E11``, ``E11.9``, ``N18.3``; dotted, upper case."""
    return bool(_ICD10.fullmatch(value))


def normalise_icd10(value: str) -> str:
    """``e119`` or ``E11 .9`` to ``E11.9`` (the ATIH files print codes without the dot)."""
    code = compact(value)
    if "." not in code and len(code) > 3:
        code = f"{code[:3]}.{code[3:]}"
    return code


def cip13_is_valid(value: str) -> bool:
    """CIP13 is an EAN-13 (prefix 34009): weights 1 and 3 from the left, mod 10."""
    if not _CIP13.fullmatch(value):
        return False
    total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(value[:12]))
    return (10 - total % 10) % 10 == int(value[12])


# --------------------------------------------------------------------------- names

_LIGATURES = str.maketrans({"æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ß": "ss"})


def fold(text: str) -> str:
    """Accent- and case-insensitive form for search.

    ``Lætitia D'Éon-Bœuf`` becomes ``laetitia d eon boeuf``: ligatures spelt out, accents
    dropped (NFKD), case folded, punctuation turned into spaces.
    """
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_LIGATURES))
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    cleaned = "".join(c if c.isalnum() else " " for c in letters)
    return " ".join(cleaned.split())


def search_terms(query: str) -> list[str]:
    """Folded words of a name query; each must appear (as a substring) in one of the names."""
    return fold(query).split()


def names_folded(identity: Identity) -> str:
    """All names of a patient, folded, space-separated, searched by substring."""
    names = [identity.birth_family_name, identity.given_names]
    names += [n for n in (identity.used_family_name, identity.used_given_name) if n]
    return " ".join(fold(n) for n in names)


# --------------------------------------------------------------------------- normalising


def _strip(value: str | None) -> str | None:
    return value.strip() if value is not None else None


def normalise_patient(patient: Patient) -> Patient:
    """Canonical form before validation: identifiers compacted, names and codes trimmed."""
    identity = patient.identity
    identity = msgspec.structs.replace(
        identity,
        birth_family_name=identity.birth_family_name.strip(),
        given_names=" ".join(identity.given_names.split()),
        used_family_name=_strip(identity.used_family_name),
        used_given_name=_strip(identity.used_given_name),
        birth_place_code=compact(identity.birth_place_code) if identity.birth_place_code else None,
        nir=compact(identity.nir) if identity.nir else None,
        ins=(
            msgspec.structs.replace(identity.ins, matricule=compact(identity.ins.matricule))
            if identity.ins
            else None
        ),
    )
    gp = patient.gp
    if gp is not None:
        gp = msgspec.structs.replace(
            gp, name=gp.name.strip(), rpps=compact(gp.rpps) if gp.rpps else None
        )
    coverage = msgspec.structs.replace(
        patient.coverage,
        ald=tuple(
            msgspec.structs.replace(a, icd10=normalise_icd10(a.icd10) if a.icd10 else None)
            for a in patient.coverage.ald
        ),
    )
    clinical = msgspec.structs.replace(
        patient.clinical,
        conditions=tuple(
            msgspec.structs.replace(c, icd10=normalise_icd10(c.icd10))
            for c in patient.clinical.conditions
        ),
        allergies=tuple(
            msgspec.structs.replace(a, atc=compact(a.atc) if a.atc else None)
            for a in patient.clinical.allergies
        ),
        lab_results=tuple(
            msgspec.structs.replace(r, loinc=compact(r.loinc)) for r in patient.clinical.lab_results
        ),
    )
    return msgspec.structs.replace(
        patient, identity=identity, gp=gp, coverage=coverage, clinical=clinical
    )


# --------------------------------------------------------------------------- validation


class _Errors:
    """Collects every broken rule with its path, so a client fixes them all at once."""

    def __init__(self, today: date) -> None:
        self.today = today
        self.items: list[FieldError] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(FieldError(key, message))

    def past(self, key: str, value: date | None) -> None:
        if value is not None and value > self.today:
            self.add(key, "must not be in the future")


def _validate_identity(identity: Identity, errors: _Errors) -> None:
    errors.past("identity.birth_date", identity.birth_date)
    if identity.birth_date < OLDEST_BIRTH:
        errors.add("identity.birth_date", f"must not be before {OLDEST_BIRTH.isoformat()}")
    if identity.birth_place_code and not _INSEE_PLACE.fullmatch(identity.birth_place_code):
        errors.add("identity.birth_place_code", "must be an INSEE code of 5 characters")
    if identity.nir is not None:
        problem = nir_problem(identity.nir) or nir_consistency_problem(
            identity.nir, identity.birth_date, identity.sex
        )
        if problem:
            errors.add("identity.nir", f"not a valid NIR: {problem}")
    _validate_ins(identity, errors)


def _validate_ins(identity: Identity, errors: _Errors) -> None:
    """RNIV rules: which identity status goes with an INS and with a checked document."""
    has_ins = identity.ins is not None
    checked = identity.verification is not None
    if has_ins != (identity.status in ("recovered", "qualified")):
        errors.add(
            "identity.ins",
            "an INS goes with the status 'recovered' or 'qualified' (and only with them)",
        )
    if checked != (identity.status in ("validated", "qualified")):
        errors.add(
            "identity.verification",
            "a checked identity document goes with the status 'validated' or 'qualified' "
            "(and only with them)",
        )
    if identity.verification is not None:
        errors.past("identity.verification.verified_on", identity.verification.verified_on)
    if identity.status == "qualified" and not identity.birth_place_code:
        errors.add("identity.birth_place_code", "is an INS trait, required for a qualified one")
    if identity.ins is not None:
        _validate_ins_number(identity.ins, identity, errors)


def _validate_ins_number(ins: Ins, identity: Identity, errors: _Errors) -> None:
    problem = nir_problem(ins.matricule) or nir_consistency_problem(
        ins.matricule, identity.birth_date, identity.sex
    )
    if problem:
        errors.add("identity.ins.matricule", f"not a valid INS matricule: {problem}")


def _validate_codes(patient: Patient, errors: _Errors) -> None:
    gp = patient.gp
    if gp is not None and gp.rpps is not None and not rpps_is_valid(gp.rpps):
        errors.add("gp.rpps", "not a valid RPPS number (11 digits starting with 1, Luhn key)")
    for i, ald in enumerate(patient.coverage.ald):
        if ald.icd10 is not None and not icd10_is_valid(ald.icd10):
            errors.add(f"coverage.ald.{i}.icd10", "not an ICD-10 code (e.g. E11.9)")
        if ald.valid_from and ald.valid_until and ald.valid_until < ald.valid_from:
            errors.add(f"coverage.ald.{i}.valid_until", "must not be before valid_from")
        errors.past(f"coverage.ald.{i}.valid_from", ald.valid_from)
    for i, consent in enumerate(patient.consents):
        errors.past(f"consents.{i}.decided_on", consent.decided_on)


def _validate_clinical(patient: Patient, errors: _Errors) -> None:
    clinical = patient.clinical
    for i, condition in enumerate(clinical.conditions):
        if not icd10_is_valid(condition.icd10):
            errors.add(f"clinical.conditions.{i}.icd10", "not an ICD-10 code (e.g. E11.9)")
        errors.past(f"clinical.conditions.{i}.onset", condition.onset)
    for i, allergy in enumerate(clinical.allergies):
        if allergy.atc is not None and not _ATC.fullmatch(allergy.atc):
            errors.add(f"clinical.allergies.{i}.atc", "not an ATC code (e.g. J01CA04)")
        errors.past(f"clinical.allergies.{i}.recorded_on", allergy.recorded_on)
    for i, result in enumerate(clinical.lab_results):
        if not loinc_is_valid(result.loinc):
            errors.add(
                f"clinical.lab_results.{i}.loinc", "not a LOINC code with a valid check digit"
            )
        errors.past(f"clinical.lab_results.{i}.observed_on", result.observed_on)
    ranges = (
        ("weight_kg", clinical.weight_kg, MIN_WEIGHT_KG, MAX_WEIGHT_KG),
        ("height_cm", clinical.height_cm, MIN_HEIGHT_CM, MAX_HEIGHT_CM),
    )
    for name, measurement, low, high in ranges:
        if measurement is None:
            continue
        if not low <= measurement.value <= high:
            errors.add(f"clinical.{name}.value", f"must be between {low:g} and {high:g}")
        errors.past(f"clinical.{name}.observed_on", measurement.observed_on)
        if measurement.observed_on < patient.identity.birth_date:
            errors.add(f"clinical.{name}.observed_on", "must not be before the birth date")


def validate_patient(patient: Patient, today: date) -> list[FieldError]:
    """Every rule the record breaks (empty when valid); ``patient`` is normalised first."""
    errors = _Errors(today)
    _validate_identity(patient.identity, errors)
    _validate_codes(patient, errors)
    _validate_clinical(patient, errors)
    return errors.items


def validate_dispensing(entry: Dispensing, today: date) -> list[FieldError]:
    """A dispensed line names its product by CIS, CIP13, or at least a label."""
    errors = _Errors(today)
    errors.past("dispensed_on", entry.dispensed_on)
    if entry.cis is None and entry.cip13 is None and entry.label is None:
        errors.add("label", "give a CIS, a CIP13 or, for an unknown product, a label")
    if entry.cis is not None and not _CIS.fullmatch(entry.cis):
        errors.add("cis", "a CIS code has 8 digits")
    if entry.cip13 is not None and not cip13_is_valid(entry.cip13):
        errors.add("cip13", "not a CIP13 (13 digits, EAN-13 key)")
    if entry.prescriber_rpps is not None and not rpps_is_valid(entry.prescriber_rpps):
        errors.add("prescriber_rpps", "not a valid RPPS number")
    return errors.items


def normalise_dispensing(entry: Dispensing) -> Dispensing:
    return msgspec.structs.replace(
        entry,
        cis=compact(entry.cis) if entry.cis else None,
        cip13=compact(entry.cip13) if entry.cip13 else None,
        label=_strip(entry.label),
        prescriber_rpps=compact(entry.prescriber_rpps) if entry.prescriber_rpps else None,
    )


def consent_in_force(consents: Iterable[Consent], kind: ConsentKind) -> Consent | None:
    """The latest decision of ``kind`` (by date; the later entry wins a tie)."""
    latest: Consent | None = None
    for consent in consents:
        if consent.kind == kind and (latest is None or consent.decided_on >= latest.decided_on):
            latest = consent
    return latest


# --------------------------------------------------------------------------- sealing


@dataclass(frozen=True)
class PatientCrypto:
    """The field keys the patient service uses, derived once per process."""

    cipher: FieldCipher
    nir_index: BlindIndex
    ins_index: BlindIndex
    pseudonyms: Pseudonymizer

    @classmethod
    def from_keys(cls, keys: FieldKeys) -> PatientCrypto:
        return cls(
            cipher=keys.cipher(),
            nir_index=keys.blind_index("nir"),
            ins_index=keys.blind_index("ins"),
            pseudonyms=keys.pseudonymizer("patient"),
        )


def aad(kind: str, record_id: str, path: str) -> str:
    """Associated data of a sealed field: which record, which field."""
    return f"hygie:{kind}:{record_id}:{path}"


_INS_ENCODER = msgspec.json.Encoder()
_INS_DECODER = msgspec.json.Decoder(Ins)


class _Sealer:
    def __init__(self, cipher: FieldCipher, kind: str, record_id: str) -> None:
        self.cipher = cipher
        self.kind = kind
        self.record_id = record_id
        self.sealed: dict[str, str] = {}

    def put(self, path: str, value: str | None) -> None:
        if value is not None:
            self.sealed[path] = self.cipher.encrypt(value, aad(self.kind, self.record_id, path))


def _notes(items: tuple[Condition, ...] | tuple[Allergy, ...]) -> Iterator[str | None]:
    return (item.note for item in items)


def seal_patient(
    patient_id: str, pseudonym: str, patient: Patient, crypto: PatientCrypto
) -> StoredPatient:
    """The stored form: NIR, INS and notes encrypted, NIR/INS blind-indexed."""
    sealer = _Sealer(crypto.cipher, "patient", patient_id)
    identity = patient.identity
    sealer.put("identity.nir", identity.nir)
    if identity.ins is not None:
        sealer.put("identity.ins", _INS_ENCODER.encode(identity.ins).decode())
    sealer.put("notes", patient.notes)
    clinical = patient.clinical
    for i, note in enumerate(_notes(clinical.conditions)):
        sealer.put(f"clinical.conditions.{i}.note", note)
    for i, note in enumerate(_notes(clinical.allergies)):
        sealer.put(f"clinical.allergies.{i}.note", note)
    blind: dict[str, str] = {}
    if identity.nir is not None:
        blind["nir"] = crypto.nir_index.compute(identity.nir)
    if identity.ins is not None:
        blind["ins"] = crypto.ins_index.compute(identity.ins.matricule)
    stripped = msgspec.structs.replace(
        patient,
        identity=msgspec.structs.replace(identity, nir=None, ins=None),
        notes=None,
        clinical=msgspec.structs.replace(
            clinical,
            conditions=tuple(msgspec.structs.replace(c, note=None) for c in clinical.conditions),
            allergies=tuple(msgspec.structs.replace(a, note=None) for a in clinical.allergies),
        ),
    )
    return StoredPatient(
        patient_id=patient_id,
        pseudonym=pseudonym,
        record=stripped,
        sealed=sealer.sealed,
        blind=blind,
    )


def unseal_patient(stored: StoredPatient, crypto: PatientCrypto) -> Patient:
    """Back to the plaintext record (raises a FieldCryptoError on a wrong key or tampering)."""

    def opened(path: str) -> str | None:
        token = stored.sealed.get(path)
        if token is None:
            return None
        return crypto.cipher.decrypt(token, aad("patient", stored.patient_id, path))

    record = stored.record
    ins_json = opened("identity.ins")
    identity = msgspec.structs.replace(
        record.identity,
        nir=opened("identity.nir"),
        ins=_INS_DECODER.decode(ins_json) if ins_json is not None else None,
    )
    clinical = record.clinical
    return msgspec.structs.replace(
        record,
        identity=identity,
        notes=opened("notes"),
        clinical=msgspec.structs.replace(
            clinical,
            conditions=tuple(
                msgspec.structs.replace(c, note=opened(f"clinical.conditions.{i}.note"))
                for i, c in enumerate(clinical.conditions)
            ),
            allergies=tuple(
                msgspec.structs.replace(a, note=opened(f"clinical.allergies.{i}.note"))
                for i, a in enumerate(clinical.allergies)
            ),
        ),
    )


# --------------------------------------------------------------------------- replication


PATIENT_STREAM = "patients"
BPM_STREAM = "bpm"


def patient_replica(stored: StoredPatient, version: int) -> dict[str, object]:
    """The pseudonymised patient version the cloud side receives (outbox ``patients``).

    Keyed by the stable pseudonym. Left out on purpose: names, NIR, INS, birth date (only
    the year), birth place, address, phone, email, the GP's name, AMO/AMC numbers, and every
    free text (condition labels and notes, allergy notes, lab labels): a BPM needs codes,
    values and dates, the cloud never needs who the patient is.
    """
    record = stored.record
    clinical = record.clinical
    coverage = record.coverage
    return {
        "pseudonym": stored.pseudonym,
        "version": version,
        "birth_year": record.identity.birth_date.year,
        "sex": record.identity.sex,
        "gp_rpps": record.gp.rpps if record.gp else None,
        "coverage": {
            "amo_regime": coverage.amo.regime if coverage.amo else None,
            "ald": [
                {
                    "number": a.number,
                    "valid_from": _iso(a.valid_from),
                    "valid_until": _iso(a.valid_until),
                }
                for a in coverage.ald
            ],
            "amc": coverage.amc is not None,
            "css": coverage.css,
        },
        "consents": [
            {"kind": c.kind, "status": c.status, "decided_on": c.decided_on.isoformat()}
            for c in record.consents
        ],
        "conditions": [
            {"icd10": c.icd10, "status": c.status, "onset": _iso(c.onset)}
            for c in clinical.conditions
        ],
        "allergies": [
            {"atc": a.atc, "severity": a.severity, "recorded_on": _iso(a.recorded_on)}
            for a in clinical.allergies
        ],
        "lab_results": [
            {
                "loinc": lab.loinc,
                "value": lab.value,
                "unit": lab.unit,
                "observed_on": lab.observed_on.isoformat(),
            }
            for lab in clinical.lab_results
        ],
        "weight_kg": clinical.weight_kg.value if clinical.weight_kg else None,
        "height_cm": clinical.height_cm.value if clinical.height_cm else None,
    }


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None
