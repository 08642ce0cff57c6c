"""Reading a FHIR R4 Bundle (type collection) into a checked :class:`PatientRecord`. Pure.

Only the elements of the analysis contract are read (docs/analysis.md). A malformed bundle
(not JSON, not a Bundle) raises :class:`BundleError`; an unusable entry (impossible value,
unknown code system, birth date in the future) is set aside and reported in
``PatientRecord.problems``, so the analysis still runs on what is sound.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, TypeGuard

import msgspec

from services.analysis.models import Condition, Dispense, Drug, Lab, PatientRecord

ATC_SYSTEM = "http://www.whocc.no/atc"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
LOINC_SYSTEM = "http://loinc.org"
CATEGORY_SYSTEM = "urn:hygie:condition-category"
ATC_PATTERN = re.compile(r"^[A-Z](\d\d([A-Z]([A-Z](\d\d)?)?)?)?$")
ICD_PATTERN = re.compile(r"^[A-Z]\d\d(\.?[0-9A-Z]{1,4})?$")
MAX_ENTRIES = 5000
MIN_YEAR, MAX_YEAR = 1850, 2200

# plausible ranges: outside them a value is an entry error, not a patient state
LAB_RANGES: dict[str, tuple[float, float]] = {
    "98979-8": (0.5, 200.0),
    "33914-3": (0.5, 200.0),
    "2160-0": (0.05, 30.0),
    "14682-9": (5.0, 2500.0),
    "29463-7": (10.0, 400.0),
    "8302-2": (50.0, 250.0),
    "8867-4": (10.0, 300.0),
    "8480-6": (40.0, 300.0),
    "8462-4": (20.0, 200.0),
    "2823-3": (1.0, 10.0),
    "2951-2": (90.0, 200.0),
}
_MG_FACTORS = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "µg": 0.001, "mcg": 0.001, "μg": 0.001}
_PERIOD_DAYS = {"d": 1.0, "wk": 7.0, "h": 1 / 24, "mo": 30.0}


class BundleError(ValueError):
    """The input is not a FHIR Bundle the engine can read at all."""


def _date(value: Any) -> date | None:
    """A FHIR date or dateTime (partial dates take the first day); None when unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            found = date(int(text), 1, 1)
        elif len(text) == 7:
            found = date(int(text[:4]), int(text[5:7]), 1)
        elif len(text) == 10:
            found = date.fromisoformat(text)
        else:
            found = datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        return None
    # outside these years a date is an entry error (and date arithmetic could overflow)
    return found if MIN_YEAR <= found.year <= MAX_YEAR else None


def _number(value: Any) -> TypeGuard[float]:
    """A JSON number (not a boolean, not infinite)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and -1e12 < value < 1e12


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    codings = concept.get("coding")
    return [c for c in codings if isinstance(c, dict)] if isinstance(codings, list) else []


def _code_of(concept: Any, system: str) -> str | None:
    for coding in _codings(concept):
        if coding.get("system") == system and isinstance(coding.get("code"), str):
            return str(coding["code"]).strip().upper()
    return None


def _product(concept: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(ATC, CIS, CIP13, name) of a medicationCodeableConcept."""
    atc = cis = cip = None
    name = concept.get("text") if isinstance(concept, dict) else None
    for coding in _codings(concept):
        system = str(coding.get("system", "")).lower()
        code = coding.get("code")
        if not isinstance(code, str) or not code.strip():
            continue
        code = code.strip()
        if system == ATC_SYSTEM:
            if ATC_PATTERN.match(code.upper()):
                atc = code.upper()
        elif "cis" in system or system.endswith("1.2.250.1.213.2.3.1"):
            cis = code
        elif "cip" in system:
            cip = code
        if not name and isinstance(coding.get("display"), str):
            name = coding["display"]
    return atc, cis, cip, name if isinstance(name, str) else None


def _label(atc: str | None, cis: str | None, cip: str | None, name: str | None) -> str:
    return (name or "").strip()[:120] or atc or (f"CIS {cis}" if cis else f"CIP {cip}")


def _dose(statement: dict[str, Any]) -> tuple[float | None, float | None]:
    """(one dose in mg, daily dose in mg) from the first dosage, when stated in mass units."""
    dosages = statement.get("dosage")
    if not isinstance(dosages, list) or not dosages or not isinstance(dosages[0], dict):
        return None, None
    dosage = dosages[0]
    one: float | None = None
    rates = dosage.get("doseAndRate")
    if isinstance(rates, list) and rates and isinstance(rates[0], dict):
        quantity = rates[0].get("doseQuantity")
        if isinstance(quantity, dict) and _number(quantity.get("value")):
            unit = str(quantity.get("code") or quantity.get("unit") or "").strip()
            factor = _MG_FACTORS.get(unit)
            value = float(quantity["value"])
            if factor is not None and value > 0:
                one = value * factor
    if one is None:
        return None, None
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    if not isinstance(repeat, dict):
        return one, None
    frequency = repeat.get("frequency", 1)
    period = repeat.get("period", 1)
    unit_days = _PERIOD_DAYS.get(str(repeat.get("periodUnit", "")))
    if (
        not _number(frequency)
        or not _number(period)
        or unit_days is None
        or frequency <= 0
        or period <= 0
    ):
        return one, None
    return one, round(one * frequency / (period * unit_days), 6)


def _statement_drug(
    statement: dict[str, Any], as_of: date, problems: list[tuple[str, tuple[str, ...]]]
) -> Drug | None:
    """The drug an active MedicationStatement describes; None when it has not started yet or
    names nothing (the missing code is reported in ``problems``)."""
    atc, cis, cip, name = _product(statement.get("medicationCodeableConcept"))
    if not (atc or cis or cip):
        problems.append(("medication", ("no ATC, CIS or CIP13 code: " + (name or "?"),)))
        if not name:
            return None
    period = statement.get("effectivePeriod")
    start = _date(period.get("start")) if isinstance(period, dict) else None
    if start is not None and start > as_of:
        return None  # not started yet at the date of the analysis
    one, daily = _dose(statement)
    return Drug(
        label=_label(atc, cis, cip, name),
        atc=atc,
        cis=cis,
        cip13=cip,
        name=name,
        dose_mg=one,
        daily_dose_mg=daily,
        start=start,
    )


def request_as_statement(
    request: dict[str, Any], *, statuses: tuple[str, ...] = ("active",)
) -> dict[str, Any] | None:
    """A MedicationRequest read as the statement of a drug taken, or None when it is not one.

    Hygie's own FHIR export gives prescription lines as MedicationRequests (``active`` while
    the treatment runs, ``completed`` after), and a CDS Hooks call sends the orders being
    written as drafts: the engine must see those drugs too. Only requests in ``statuses``
    count. The validity period is not read: it bounds dispensing, not the treatment, which
    may run on after it (renewals).
    """
    if request.get("status") not in statuses:
        return None
    return {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": request.get("medicationCodeableConcept"),
        "dosage": request.get("dosageInstruction"),
        "effectivePeriod": {"start": request.get("authoredOn")},
    }


def parse(raw: bytes | str | dict[str, Any], *, today: date) -> PatientRecord:
    """The patient record a Bundle describes; ``today`` when the Bundle has no timestamp."""
    if isinstance(raw, dict):
        bundle: Any = raw
    else:
        try:
            bundle = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"not valid JSON: {exc}") from exc
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BundleError("not a FHIR Bundle (resourceType must be 'Bundle')")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise BundleError("Bundle.entry must be a list")
    if len(entries) > MAX_ENTRIES:
        raise BundleError(f"too many entries (more than {MAX_ENTRIES})")
    problems: list[tuple[str, tuple[str, ...]]] = []
    as_of = today
    if "timestamp" in bundle:
        stamp = _date(bundle.get("timestamp"))
        if stamp is None:
            raise BundleError("Bundle.timestamp is not a FHIR instant")
        as_of = stamp

    birth: date | None = None
    sex: Any = None
    patient_id: str | None = None
    patients = 0
    drugs: list[Drug] = []
    conditions: list[Condition] = []
    labs: list[Lab] = []
    dispenses: list[Dispense] = []
    requests: list[dict[str, Any]] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            problems.append(("bundle", ("entry without a resource",)))
            continue
        kind = resource.get("resourceType")
        if kind == "Patient":
            patients += 1
            patient_id = resource.get("id") if isinstance(resource.get("id"), str) else None
            birth = _date(resource.get("birthDate"))
            if resource.get("birthDate") is not None and birth is None:
                problems.append(("patient", ("birthDate: unreadable",)))
            elif birth is not None and birth > as_of:
                problems.append(("patient", ("birthDate: in the future",)))
                birth = None
            gender = resource.get("gender")
            sex = gender if gender in ("male", "female") else None
        elif kind == "MedicationRequest":
            statement = request_as_statement(resource)
            if statement is not None:
                requests.append(statement)
        elif kind == "MedicationStatement":
            if resource.get("status") != "active":
                continue
            drug = _statement_drug(resource, as_of, problems)
            if drug is not None:
                drugs.append(drug)
        elif kind == "MedicationDispense":
            if resource.get("status") in ("entered-in-error", "cancelled", "declined"):
                continue
            atc, cis, cip, name = _product(resource.get("medicationCodeableConcept"))
            handed = _date(resource.get("whenHandedOver"))
            supply = resource.get("daysSupply")
            days = supply.get("value") if isinstance(supply, dict) else None
            if handed is None or not _number(days) or not 0 < float(days) <= 366:
                problems.append(("dispense", ("whenHandedOver or daysSupply missing or invalid",)))
                continue
            if handed > as_of or not (atc or cis or cip or name):
                continue
            dispenses.append(
                Dispense(
                    label=_label(atc, cis, cip, name),
                    atc=atc,
                    cis=cis,
                    cip13=cip,
                    handed_over=handed,
                    days_supply=int(float(days)),
                )
            )
        elif kind == "Condition":
            status = _codings(resource.get("clinicalStatus"))
            if status and status[0].get("code") in ("inactive", "resolved"):
                continue
            code = _code_of(resource.get("code"), ICD10_SYSTEM)
            if code is None or not ICD_PATTERN.match(code):
                problems.append(("condition", ("no ICD-10 code",)))
                continue
            ald = any(
                c.get("system") == CATEGORY_SYSTEM and c.get("code") == "ald"
                for cat in (resource.get("category") or [])
                for c in _codings(cat)
            )
            onset = _date(resource.get("onsetDateTime"))
            conditions.append(Condition(code=code.replace(".", ""), ald=ald, onset=onset))
        elif kind == "Observation":
            when = _date(resource.get("effectiveDateTime"))
            if when is not None and when > as_of:
                continue
            # A blood-pressure panel (LOINC 85354-9) carries its systolic and diastolic values
            # as components: each known component is read like an Observation of its own.
            parts = [resource, *(c for c in resource.get("component") or [] if isinstance(c, dict))]
            for part in parts:
                lab = _lab_of(part, when, problems)
                if lab is not None:
                    labs.append(lab)
    known = {(d.atc, d.cis, d.cip13) for d in drugs}
    for statement in requests:
        drug = _statement_drug(statement, as_of, problems)
        if drug is not None and (drug.atc, drug.cis, drug.cip13) not in known:
            known.add((drug.atc, drug.cis, drug.cip13))
            drugs.append(drug)
    if patients == 0:
        problems.append(("patient", ("no Patient resource",)))
    elif patients > 1:
        raise BundleError("the Bundle describes more than one Patient")
    return PatientRecord(
        as_of=as_of,
        birth_date=birth,
        sex=sex,
        drugs=tuple(drugs),
        conditions=tuple(conditions),
        labs=tuple(labs),
        dispenses=tuple(dispenses),
        patient_id=patient_id,
        problems=tuple(problems),
    )


def _lab_of(
    part: dict[str, Any], when: date | None, problems: list[tuple[str, tuple[str, ...]]]
) -> Lab | None:
    """One value of an Observation (or of one of its components) with a known LOINC code."""
    code = _code_of(part.get("code"), LOINC_SYSTEM)
    if code is None or code not in LAB_RANGES:
        return None
    quantity = part.get("valueQuantity")
    value = quantity.get("value") if isinstance(quantity, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append((f"LOINC {code}", ("no numeric valueQuantity",)))
        return None
    low, high = LAB_RANGES[code]
    if not low <= float(value) <= high:
        problems.append((f"LOINC {code}", (f"impossible value {value}",)))
        return None
    unit = str(quantity.get("unit") or quantity.get("code") or "") if quantity else ""
    return Lab(loinc=code, value=float(value), unit=unit, when=when)
