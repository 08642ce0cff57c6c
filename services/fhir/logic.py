"""Pure mappings between Hygie's records and FHIR R4 resources (as plain JSON dicts,
validated with the ``fhir.resources.R4B`` models), and the checks of one bundle entry.

French identifiers follow FR Core: INS-NIR ``urn:oid:1.2.250.1.213.1.4.8``, INS-NIA
``urn:oid:1.2.250.1.213.1.4.9``, RPPS ``urn:oid:1.2.250.1.71.4.2.1``. Medicinal products are
coded with CIS and CIP13 (systems of the Interop'Santé medication guide) and ATC.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import msgspec
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from services.patients.models import (
    Address,
    Allergy,
    Condition,
    Contact,
    Dispensing,
    GeneralPractitioner,
    Identity,
    Ins,
    LabResult,
    Measurement,
    Patient,
)
from services.prescriptions.models import (
    Duration,
    MedicationStatement,
    Posology,
    Prescriber,
    Prescription,
    PrescriptionLine,
)

Json = dict[str, Any]

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_NIA = "urn:oid:1.2.250.1.213.1.4.9"
INS_TEST = {"urn:oid:1.2.250.1.213.1.4.10", "urn:oid:1.2.250.1.213.1.4.11"}
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
ATC = "http://www.whocc.no/atc"
CIS = "http://data.esante.gouv.fr/ansm/medicament/codeCIS"
CIP13 = "http://data.esante.gouv.fr/ansm/medicament/codeCIP13"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
FR_CORE_ID_TYPE = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
HYGIE_PRESCRIPTION = "urn:hygie:prescription"
HYGIE_DISPENSING = "urn:hygie:dispensing"
HYGIE_STATEMENT = "urn:hygie:medication-statement"
HYGIE_LINE = "urn:hygie:prescription-line"
HYGIE_UNIT = "urn:hygie:unit"
WEIGHT_LOINC = "29463-7"
HEIGHT_LOINC = "8302-2"

SUPPORTED = (
    "Patient",
    "Practitioner",
    "Medication",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationDispense",
    "Condition",
    "Observation",
    "AllergyIntolerance",
)
_ATC_SHAPE = re.compile(r"^[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?$")
_SEX_TO_GENDER = {"F": "female", "M": "male", "I": "other"}
_GENDER_TO_SEX = {"female": "F", "male": "M", "other": "I", "unknown": "I"}
_WHEN = {"morning": "MORN", "noon": "NOON", "evening": "EVE", "bedtime": "HS"}
_WHEN_BACK = {v: k for k, v in _WHEN.items()}
_DURATION_UNIT = {"day": "d", "week": "wk", "month": "mo"}
_DURATION_BACK = {v: k for k, v in _DURATION_UNIT.items()}


_REQUIRED_BINDINGS: dict[str, dict[str, frozenset[str]]] = {
    "Patient": {"gender": frozenset({"male", "female", "other", "unknown"})},
    "MedicationRequest": {
        "status": frozenset(
            {
                "active",
                "on-hold",
                "cancelled",
                "completed",
                "entered-in-error",
                "stopped",
                "draft",
                "unknown",
            }
        ),
        "intent": frozenset(
            {
                "proposal",
                "plan",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            }
        ),
    },
    "MedicationStatement": {
        "status": frozenset(
            {
                "active",
                "completed",
                "entered-in-error",
                "intended",
                "stopped",
                "on-hold",
                "unknown",
                "not-taken",
            }
        )
    },
    "MedicationDispense": {
        "status": frozenset(
            {
                "preparation",
                "in-progress",
                "cancelled",
                "on-hold",
                "completed",
                "entered-in-error",
                "stopped",
                "declined",
                "unknown",
            }
        )
    },
    "Observation": {
        "status": frozenset(
            {
                "registered",
                "preliminary",
                "final",
                "amended",
                "corrected",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
}
"""Codes of required bindings (FHIR R4), which the models do not check."""


class EntryError(Exception):
    """Why one bundle entry is rejected (one line, no patient data)."""


# --------------------------------------------------------------------------- validation


def validate_resource(resource: Any) -> Json:
    """The resource as JSON, checked against the FHIR R4 (R4B) model of its type."""
    if not isinstance(resource, dict):
        raise EntryError("entry has no resource object")
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        raise EntryError("resource has no resourceType")
    if kind not in SUPPORTED:
        raise EntryError(f"resource type '{kind}' is not supported here ({', '.join(SUPPORTED)})")
    try:
        get_fhir_model_class(kind).model_validate(resource)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
        ]
        raise EntryError(f"not a valid FHIR R4 {kind}: " + "; ".join(problems)) from None
    except (ValueError, TypeError) as exc:
        raise EntryError(f"not a valid FHIR R4 {kind}: {exc}") from None
    for element, codes in _REQUIRED_BINDINGS.get(kind, {}).items():
        value = resource.get(element)
        if value is not None and value not in codes:
            raise EntryError(f"{kind}.{element}: '{value}' is not a code of its value set")
    return resource


def _day(value: Any, what: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise EntryError(f"{what}: not a date") from None


def _codes(concept: Json | None, system: str) -> list[str]:
    return [
        str(c["code"])
        for c in (concept or {}).get("coding", [])
        if c.get("system") == system and c.get("code")
    ]


def _first(concept: Json | None, system: str) -> str | None:
    found = _codes(concept, system)
    return found[0] if found else None


def reference_id(reference: Json | None) -> str | None:
    """``Patient/abc`` → ``Patient/abc``; an ``urn:uuid:`` reference as is."""
    if not reference:
        return None
    value = reference.get("reference")
    return str(value) if value else None


# --------------------------------------------------------------------------- products


def medication_concept(
    cis: str | None, cip13: str | None, label: str | None, atc: str | None = None
) -> Json:
    coding = []
    if cis:
        coding.append({"system": CIS, "code": cis})
    if cip13:
        coding.append({"system": CIP13, "code": cip13})
    if atc:
        coding.append({"system": ATC, "code": atc})
    concept: Json = {"coding": coding} if coding else {}
    if label:
        concept["text"] = label
    return concept


def with_medication_concept(resource: Json, medications: dict[str, Json]) -> Json:
    """The resource with its ``medicationReference`` replaced by the referenced Medication's
    ``code``: a contained one (``#id``) or a Medication entry of the bundle (by fullUrl or
    ``Medication/<id>``). A concept already given is kept; a dangling reference is refused."""
    if resource.get("medicationCodeableConcept") or "medicationReference" not in resource:
        return resource
    reference = (resource.get("medicationReference") or {}).get("reference")
    if not isinstance(reference, str) or not reference:
        raise EntryError("medicationReference has no reference")
    found: Json | None = None
    if reference.startswith("#"):
        found = next(
            (
                item
                for item in resource.get("contained", [])
                if isinstance(item, dict)
                and item.get("resourceType") == "Medication"
                and item.get("id") == reference[1:]
            ),
            None,
        )
    else:
        found = medications.get(reference)
    if found is None:
        raise EntryError(f"medicationReference '{reference[:80]}' names no Medication here")
    if not found.get("code"):
        raise EntryError(f"the Medication '{reference[:80]}' has no code")
    result = {k: v for k, v in resource.items() if k != "medicationReference"}
    result["medicationCodeableConcept"] = found["code"]
    return result


def concept_product(concept: Json | None) -> tuple[str | None, str | None, str | None]:
    """(CIS, CIP13, label) of a medicationCodeableConcept (or of the Medication a
    medicationReference names, resolved beforehand); ATC codes are checked, not kept (the
    catalog gives them back from the CIS)."""
    if not concept:
        raise EntryError("medicationCodeableConcept or medicationReference is required")
    for code in _codes(concept, ATC):
        if not _ATC_SHAPE.fullmatch(code):
            raise EntryError(f"'{code}' is not an ATC code")
    cis, cip13, label = _first(concept, CIS), _first(concept, CIP13), concept.get("text")
    if not (cis or cip13 or label):
        raise EntryError("the medication has no CIS, no CIP13 and no text")
    return cis, cip13, label


# --------------------------------------------------------------------------- posology


def dosage(posology: Posology, text: str | None) -> Json:
    result: Json = {}
    if posology.sequence is not None:
        result["sequence"] = posology.sequence
    if text:
        result["text"] = text
    if posology.as_needed:
        result["asNeededBoolean"] = True
    repeat: Json = {}
    if posology.times_per_day is not None:
        repeat.update(frequency=1, period=1 / posology.times_per_day, periodUnit="d")
        if posology.times_per_day == int(posology.times_per_day):
            repeat.update(frequency=int(posology.times_per_day), period=1)
    if posology.times_of_day:
        repeat["when"] = [_WHEN[t] for t in posology.times_of_day]
    if posology.duration:
        repeat["boundsDuration"] = {
            "value": posology.duration.value,
            "unit": posology.duration.unit,
            "system": UCUM,
            "code": _DURATION_UNIT[posology.duration.unit],
        }
    if repeat:
        result["timing"] = {"repeat": repeat}
    if posology.dose is not None:
        result["doseAndRate"] = [
            {"doseQuantity": {"value": posology.dose, "unit": posology.unit or ""}}
        ]
    return result


def posology(dosages: list[Json] | None) -> tuple[Posology, str | None]:
    """The single dosage of a MedicationStatement (several: rejected, split the statement)."""
    if not dosages:
        return Posology(), None
    if len(dosages) > 1:
        raise EntryError("only one dosage per statement is read (split the statement)")
    return _one_posology(dosages[0])


def posologies(dosages: list[Json] | None) -> tuple[tuple[Posology, ...], str | None]:
    """Every dosageInstruction of a MedicationRequest, in the given order, and the prescriber's
    text (the first instruction's; the others' are kept when they differ, joined by « ; »)."""
    if not dosages:
        return (Posology(),), None
    if len(dosages) > 11:
        raise EntryError("at most 11 dosageInstruction per line are read")
    read = [_one_posology(item) for item in dosages]
    texts = list(dict.fromkeys(text for _, text in read if text))
    return tuple(item for item, _ in read), "; ".join(texts) or None


def _one_posology(item: Json) -> tuple[Posology, str | None]:
    repeat = (item.get("timing") or {}).get("repeat") or {}
    times = None
    if "frequency" in repeat:
        unit = repeat.get("periodUnit", "d")
        per_unit = {"h": 24.0, "d": 1.0, "wk": 1 / 7}.get(unit)
        if per_unit is None:
            raise EntryError(f"timing periodUnit '{unit}' is not read")
        times = round(repeat["frequency"] / repeat.get("period", 1) * per_unit, 6)
    when = tuple(_WHEN_BACK[w] for w in repeat.get("when", []) if w in _WHEN_BACK)
    if len(when) != len(repeat.get("when", [])):
        raise EntryError("timing.when: only MORN, NOON, EVE and HS are read")
    duration = None
    bounds = repeat.get("boundsDuration")
    if bounds:
        unit = _DURATION_BACK.get(bounds.get("code") or "") or bounds.get("unit")
        if unit not in ("day", "week", "month"):
            raise EntryError("boundsDuration: unit must be d, wk or mo")
        duration = Duration(value=int(bounds["value"]), unit=unit)  # type: ignore[arg-type]
    dose = unit_name = None
    rates = item.get("doseAndRate") or []
    if rates:
        quantity = rates[0].get("doseQuantity") or {}
        dose = quantity.get("value")
        unit_name = quantity.get("unit") or None
    try:
        result = msgspec.convert(
            {
                "dose": dose,
                "unit": unit_name,
                "times_per_day": times,
                "times_of_day": list(when),
                "duration": msgspec.to_builtins(duration) if duration else None,
                "as_needed": bool(item.get("asNeededBoolean", False)),
                "sequence": item.get("sequence"),
            },
            Posology,
        )
    except msgspec.ValidationError as exc:
        raise EntryError(f"dosage: {exc}") from None
    return result, item.get("text")


# --------------------------------------------------------------------------- practitioner


def practitioner(prescriber: Prescriber, resource_id: str) -> Json:
    result: Json = {
        "resourceType": "Practitioner",
        "id": resource_id,
        "name": [{"text": prescriber.name}],
    }
    if prescriber.rpps:
        result["identifier"] = [{"system": RPPS, "value": prescriber.rpps}]
    if prescriber.specialty:
        result["qualification"] = [{"code": {"text": prescriber.specialty}}]
    return result


def prescriber(resource: Json) -> Prescriber:
    names = resource.get("name") or []
    name = None
    if names:
        first = names[0]
        name = (
            first.get("text")
            or " ".join(
                [*first.get("prefix", []), *first.get("given", []), first.get("family", "")]
            ).strip()
        )
    if not name:
        raise EntryError("Practitioner has no name")
    rpps = next(
        (i.get("value") for i in resource.get("identifier", []) if i.get("system") == RPPS), None
    )
    qualification = resource.get("qualification") or []
    specialty = (qualification[0].get("code") or {}).get("text") if qualification else None
    return Prescriber(name=name, rpps=rpps, specialty=specialty)


# --------------------------------------------------------------------------- MedicationRequest


def medication_requests(
    prescription_id: str,
    prescription: Prescription,
    patient_ref: str,
    practitioner_ref: str,
    atc_by_line: dict[int, str | None] | None = None,
    *,
    status: str = "active",
) -> list[Json]:
    """One MedicationRequest per line, grouped by the prescription's id; ``status`` is the
    prescription's (``active`` while its treatment runs, ``completed`` after)."""
    requests = []
    for index, line in enumerate(prescription.lines):
        request: Json = {
            "resourceType": "MedicationRequest",
            "id": f"{prescription_id}-{index}",
            "identifier": [{"system": HYGIE_LINE, "value": f"{prescription_id}#{index}"}],
            "groupIdentifier": {"system": HYGIE_PRESCRIPTION, "value": prescription_id},
            "status": status,
            "intent": "order",
            "medicationCodeableConcept": medication_concept(
                line.cis, line.cip13, line.label, (atc_by_line or {}).get(index)
            ),
            "subject": {"reference": patient_ref},
            "authoredOn": prescription.prescribed_on.isoformat(),
            "requester": {"reference": practitioner_ref},
            "dispenseRequest": {"numberOfRepeatsAllowed": prescription.renewals},
            "substitution": {"allowedBoolean": line.substitutable},
        }
        if prescription.valid_until:
            request["dispenseRequest"]["validityPeriod"] = {
                "start": prescription.prescribed_on.isoformat(),
                "end": prescription.valid_until.isoformat(),
            }
        doses = [
            dosage(line.posology, line.original_text),
            *(dosage(item, None) for item in line.more_posologies),
        ]
        if any(doses):
            request["dosageInstruction"] = doses
        requests.append(request)
    return requests


def request_line(resource: Json) -> tuple[PrescriptionLine, date, int, date | None]:
    """A MedicationRequest as one line, with the prescription's date, renewals, validity."""
    if resource.get("intent") not in ("order", "original-order", "plan"):
        raise EntryError(f"intent '{resource.get('intent')}' is not a prescription")
    cis, cip13, label = concept_product(resource.get("medicationCodeableConcept"))
    found, text = posologies(resource.get("dosageInstruction"))
    authored = _day(resource.get("authoredOn"), "authoredOn")
    if authored is None:
        raise EntryError("authoredOn is required (the prescription's date)")
    dispense = resource.get("dispenseRequest") or {}
    validity = _day((dispense.get("validityPeriod") or {}).get("end"), "validityPeriod.end")
    substitution = resource.get("substitution") or {}
    line = PrescriptionLine(
        cis=cis,
        cip13=cip13,
        label=label,
        posology=found[0],
        more_posologies=found[1:],
        original_text=text,
        substitutable=bool(substitution.get("allowedBoolean", True)),
    )
    return line, authored, int(dispense.get("numberOfRepeatsAllowed", 0)), validity


def group_key(resource: Json) -> str:
    group = resource.get("groupIdentifier") or {}
    if group.get("value"):
        return f"{group.get('system', '')}|{group['value']}"
    return f"request|{resource.get('id', id(resource))}"


def hygie_id(resource: Json, system: str) -> str | None:
    group = resource.get("groupIdentifier") or {}
    if group.get("system") == system and group.get("value"):
        return str(group["value"])
    for identifier in resource.get("identifier", []):
        if identifier.get("system") == system and identifier.get("value"):
            return str(identifier["value"])
    return None


# --------------------------------------------------------------------------- MedicationStatement


def statement_resource(statement_id: str, statement: MedicationStatement, patient_ref: str) -> Json:
    result: Json = {
        "resourceType": "MedicationStatement",
        "id": statement_id,
        "identifier": [{"system": HYGIE_STATEMENT, "value": statement_id}],
        "status": statement.status,
        "medicationCodeableConcept": medication_concept(
            statement.cis, statement.cip13, statement.label
        ),
        "subject": {"reference": patient_ref},
    }
    period: Json = {}
    if statement.effective_start:
        period["start"] = statement.effective_start.isoformat()
    if statement.effective_end:
        period["end"] = statement.effective_end.isoformat()
    if period:
        result["effectivePeriod"] = period
    if statement.asserted_on:
        result["dateAsserted"] = statement.asserted_on.isoformat()
    dose = dosage(statement.posology, statement.original_text)
    if dose:
        result["dosage"] = [dose]
    return result


def statement(resource: Json, patient_id: str) -> MedicationStatement:
    cis, cip13, label = concept_product(resource.get("medicationCodeableConcept"))
    pos, text = posology(resource.get("dosage"))
    period = resource.get("effectivePeriod") or {}
    if resource.get("effectiveDateTime"):
        period = {"start": resource["effectiveDateTime"]}
    try:
        return msgspec.convert(
            {
                "patient_id": patient_id,
                "status": resource.get("status"),
                "cis": cis,
                "cip13": cip13,
                "label": label,
                "posology": msgspec.to_builtins(pos),
                "original_text": text,
                "effective_start": period.get("start", "")[:10] or None,
                "effective_end": period.get("end", "")[:10] or None,
                "asserted_on": (resource.get("dateAsserted") or "")[:10] or None,
            },
            MedicationStatement,
        )
    except msgspec.ValidationError as exc:
        raise EntryError(f"MedicationStatement: {exc}") from None


# --------------------------------------------------------------------------- MedicationDispense


def dispense_resource(dispensing_id: str, entry: Dispensing, patient_ref: str) -> Json:
    result: Json = {
        "resourceType": "MedicationDispense",
        "id": dispensing_id,
        "identifier": [{"system": HYGIE_DISPENSING, "value": dispensing_id}],
        "status": "completed",
        "medicationCodeableConcept": medication_concept(entry.cis, entry.cip13, entry.label),
        "subject": {"reference": patient_ref},
        "quantity": {"value": entry.quantity, "unit": "box"},
        "whenHandedOver": entry.dispensed_on.isoformat(),
    }
    if entry.prescriber_rpps:
        result["authorizingPrescription"] = [
            {"identifier": {"system": RPPS, "value": entry.prescriber_rpps}}
        ]
    return result


def dispensing(resource: Json) -> Dispensing:
    if resource.get("status") not in ("completed", None):
        raise EntryError(f"only completed dispenses are recorded, not '{resource.get('status')}'")
    cis, cip13, label = concept_product(resource.get("medicationCodeableConcept"))
    handed = _day(resource.get("whenHandedOver"), "whenHandedOver")
    if handed is None:
        raise EntryError("whenHandedOver is required")
    quantity = (resource.get("quantity") or {}).get("value")
    if quantity is None or quantity != int(quantity) or not 1 <= quantity <= 999:
        raise EntryError("quantity.value must be a whole number of boxes from 1 to 999")
    rpps = None
    for prescription in resource.get("authorizingPrescription", []):
        identifier = prescription.get("identifier") or {}
        if identifier.get("system") == RPPS:
            rpps = identifier.get("value")
    return Dispensing(
        dispensed_on=handed,
        quantity=int(quantity),
        cis=cis,
        cip13=cip13,
        label=label,
        prescriber_rpps=rpps,
    )


# --------------------------------------------------------------------------- Patient


def patient_resource(patient_id: str, patient: Patient, gp_ref: str | None) -> Json:
    identity = patient.identity
    names: list[Json] = [
        {
            "use": "official",
            "family": identity.birth_family_name,
            "given": identity.given_names.split(),
        }
    ]
    if identity.used_family_name or identity.used_given_name:
        usual: Json = {"use": "usual"}
        if identity.used_family_name:
            usual["family"] = identity.used_family_name
        if identity.used_given_name:
            usual["given"] = [identity.used_given_name]
        names.append(usual)
    identifiers: list[Json] = []
    if identity.ins:
        oid = f"urn:oid:{identity.ins.oid}"
        code = "INS-NIA" if identity.ins.oid.endswith((".9", ".11")) else "INS-NIR"
        identifiers.append(
            {
                "use": "official",
                "type": {"coding": [{"system": FR_CORE_ID_TYPE, "code": code}]},
                "system": oid,
                "value": identity.ins.matricule,
            }
        )
    if identity.nir:
        identifiers.append(
            {
                "type": {"coding": [{"system": V2_0203, "code": "NH"}]},
                "system": INS_NIR,
                "value": identity.nir,
            }
        )
    result: Json = {
        "resourceType": "Patient",
        "id": patient_id,
        "name": names,
        "gender": _SEX_TO_GENDER[identity.sex],
        "birthDate": identity.birth_date.isoformat(),
    }
    if identifiers:
        result["identifier"] = identifiers
    contact = patient.contact
    telecom = []
    if contact.phone:
        telecom.append({"system": "phone", "value": contact.phone})
    if contact.email:
        telecom.append({"system": "email", "value": contact.email})
    if telecom:
        result["telecom"] = telecom
    if contact.address:
        address: Json = {"country": contact.address.country}
        if contact.address.lines:
            address["line"] = list(contact.address.lines)
        if contact.address.postal_code:
            address["postalCode"] = contact.address.postal_code
        if contact.address.city:
            address["city"] = contact.address.city
        result["address"] = [address]
    if gp_ref:
        result["generalPractitioner"] = [{"reference": gp_ref}]
    return result


def _is_ins(identifier: Json) -> bool:
    codes = {c.get("code") for c in (identifier.get("type") or {}).get("coding", [])}
    return bool(codes & {"INS-NIR", "INS-NIA", "INS-C"}) or identifier.get("system") in (
        INS_NIA,
        *INS_TEST,
    )


def patient_identity(resource: Json, base: Identity | None) -> tuple[Identity, Contact]:
    """Identity and contact from a FHIR Patient; what FHIR does not carry (identity status,
    checked document, birth place) is kept from ``base``."""
    official = next(
        (n for n in resource.get("name", []) if n.get("use") in ("official", None)), None
    )
    if official is None or not official.get("family") or not official.get("given"):
        raise EntryError("Patient needs an official name with family and given names")
    usual: Json = next((n for n in resource.get("name", []) if n.get("use") == "usual"), {})
    gender = resource.get("gender")
    if gender not in _GENDER_TO_SEX:
        raise EntryError("Patient.gender is required (male, female, other, unknown)")
    birth = _day(resource.get("birthDate"), "birthDate")
    if birth is None:
        raise EntryError("Patient.birthDate is required")
    nir = ins = None
    for identifier in resource.get("identifier", []):
        system, value = identifier.get("system"), identifier.get("value")
        if system not in (INS_NIR, INS_NIA, *INS_TEST) or not value:
            continue
        if _is_ins(identifier):
            ins = Ins(matricule=value, oid=system.removeprefix("urn:oid:"))
        else:
            nir = value
    status = base.status if base else "provisional"
    if ins and status not in ("recovered", "qualified"):
        status = "recovered"
    fields: Json = msgspec.to_builtins(base) if base else {}
    fields.update(
        birth_family_name=official["family"],
        given_names=" ".join(official["given"]),
        birth_date=birth.isoformat(),
        sex=_GENDER_TO_SEX[gender],
        used_family_name=usual.get("family"),
        used_given_name=(usual.get("given") or [None])[0],
        nir=nir,
        ins=msgspec.to_builtins(ins) if ins else None,
        status=status,
    )
    phone = email = None
    for telecom in resource.get("telecom", []):
        if telecom.get("system") == "phone":
            phone = telecom.get("value")
        elif telecom.get("system") == "email":
            email = telecom.get("value")
    address = None
    if resource.get("address"):
        first = resource["address"][0]
        address = Address(
            lines=tuple(first.get("line", [])),
            postal_code=first.get("postalCode", ""),
            city=first.get("city", ""),
            country=first.get("country", "FR"),
        )
    try:
        identity = msgspec.convert(fields, Identity)
        contact = msgspec.convert(
            {"address": msgspec.to_builtins(address), "phone": phone, "email": email}, Contact
        )
    except msgspec.ValidationError as exc:
        raise EntryError(f"Patient: {exc}") from None
    return identity, contact


def gp_from(practitioner_resource: Json | None) -> GeneralPractitioner | None:
    if practitioner_resource is None:
        return None
    found = prescriber(practitioner_resource)
    return GeneralPractitioner(name=found.name, rpps=found.rpps)


# --------------------------------------------------------------------------- clinical context


def condition_resource(index: int, patient_id: str, condition: Condition, ref: str) -> Json:
    result: Json = {
        "resourceType": "Condition",
        "id": f"{patient_id}-condition-{index}",
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": condition.status}]},
        "code": {"coding": [{"system": ICD10, "code": condition.icd10}]},
        "subject": {"reference": ref},
    }
    if condition.label:
        result["code"]["text"] = condition.label
    if condition.onset:
        result["onsetDateTime"] = condition.onset.isoformat()
    if condition.note:
        result["note"] = [{"text": condition.note}]
    return result


def condition(resource: Json) -> Condition:
    code = _first(resource.get("code"), ICD10)
    if code is None:
        raise EntryError("Condition.code needs an ICD-10 coding (http://hl7.org/fhir/sid/icd-10)")
    status = _first(resource.get("clinicalStatus"), CONDITION_CLINICAL) or "active"
    status = "resolved" if status in ("resolved", "inactive", "remission") else "active"
    notes = resource.get("note") or []
    return Condition(
        icd10=code,
        label=(resource.get("code") or {}).get("text"),
        onset=_day(resource.get("onsetDateTime"), "onsetDateTime"),
        status=status,  # type: ignore[arg-type]
        note=notes[0].get("text") if notes else None,
    )


_SEVERITY = ("mild", "moderate", "severe")


def allergy_resource(index: int, patient_id: str, allergy: Allergy, ref: str) -> Json:
    code: Json = {"text": allergy.substance}
    if allergy.atc:
        code["coding"] = [{"system": ATC, "code": allergy.atc}]
    result: Json = {
        "resourceType": "AllergyIntolerance",
        "id": f"{patient_id}-allergy-{index}",
        "code": code,
        "patient": {"reference": ref},
    }
    if allergy.severity in _SEVERITY:
        result["reaction"] = [
            {"manifestation": [{"text": "reaction"}], "severity": allergy.severity}
        ]
    if allergy.recorded_on:
        result["recordedDate"] = allergy.recorded_on.isoformat()
    if allergy.note:
        result["note"] = [{"text": allergy.note}]
    return result


def allergy(resource: Json) -> Allergy:
    code = resource.get("code") or {}
    atc = _first(code, ATC)
    if atc is not None and not _ATC_SHAPE.fullmatch(atc):
        raise EntryError(f"'{atc}' is not an ATC code")
    substance = code.get("text")
    if not substance:
        raise EntryError("AllergyIntolerance.code.text (the substance) is required")
    severity = "unknown"
    for reaction in resource.get("reaction", []):
        if reaction.get("severity") in _SEVERITY:
            severity = reaction["severity"]
    notes = resource.get("note") or []
    return Allergy(
        substance=substance,
        atc=atc,
        severity=severity,  # type: ignore[arg-type]
        recorded_on=_day(resource.get("recordedDate"), "recordedDate"),
        note=notes[0].get("text") if notes else None,
    )


def observation_resource(
    resource_id: str,
    loinc: str,
    value: float,
    unit: str,
    observed_on: date,
    ref: str,
    label: str | None = None,
) -> Json:
    code: Json = {"coding": [{"system": LOINC, "code": loinc}]}
    if label:
        code["text"] = label
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "code": code,
        "subject": {"reference": ref},
        "effectiveDateTime": observed_on.isoformat(),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def observation(resource: Json) -> LabResult | tuple[str, Measurement]:
    """A lab result, or ``("weight_kg" | "height_cm", measurement)``."""
    loinc = _first(resource.get("code"), LOINC)
    if loinc is None:
        raise EntryError("Observation.code needs a LOINC coding (http://loinc.org)")
    quantity = resource.get("valueQuantity")
    if not quantity or quantity.get("value") is None:
        raise EntryError("Observation needs a valueQuantity")
    observed = _day(resource.get("effectiveDateTime"), "effectiveDateTime")
    if observed is None:
        raise EntryError("Observation.effectiveDateTime is required")
    unit = quantity.get("code") or quantity.get("unit") or ""
    try:
        if loinc in (WEIGHT_LOINC, HEIGHT_LOINC):
            if unit not in ("kg", "cm"):
                raise EntryError("weight in kg and height in cm only")
            field = "weight_kg" if loinc == WEIGHT_LOINC else "height_cm"
            return field, Measurement(value=float(quantity["value"]), observed_on=observed)
        return msgspec.convert(
            {
                "loinc": loinc,
                "value": float(quantity["value"]),
                "unit": unit,
                "observed_on": observed.isoformat(),
                "label": (resource.get("code") or {}).get("text"),
            },
            LabResult,
        )
    except msgspec.ValidationError as exc:
        raise EntryError(f"Observation: {exc}") from None
