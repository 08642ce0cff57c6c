"""Pure rules of prescriptions: normalisation, mandatory fields, dates, validation report.

No I/O: the catalog's answers (:class:`Product` per line) are passed in, so every rule is
tested directly.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import date, timedelta

import msgspec

from services.patients.logic import cip13_is_valid, compact, rpps_is_valid
from services.prescriptions.doses import DoseTable, check_line, load_table
from services.prescriptions.models import (
    FieldError,
    Finding,
    Posology,
    Prescription,
    PrescriptionLine,
    Product,
    ValidationReport,
)

DEFAULT_VALIDITY_MONTHS = 3
"""A prescription is presented for its first dispensing within three months of its date
(Code de la santé publique, art. R.5132-22 for the lists I and II)."""

POSOLOGY_NOT_CHECKED = "not checked: no RCP maximum daily dose in the table for this product"


def add_months(day: date, months: int) -> date:
    """Same day ``months`` later, clamped to the end of a shorter month (31 Jan + 1 = 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _strip(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = " ".join(value.split())
    return stripped or None


def normalise(prescription: Prescription) -> Prescription:
    """Identifiers without spaces, labels with single spaces."""
    lines = tuple(
        msgspec.structs.replace(
            line,
            cis=compact(line.cis) if line.cis else None,
            cip13=compact(line.cip13) if line.cip13 else None,
            label=_strip(line.label),
        )
        for line in prescription.lines
    )
    prescriber = msgspec.structs.replace(
        prescription.prescriber,
        rpps=compact(prescription.prescriber.rpps) if prescription.prescriber.rpps else None,
    )
    return msgspec.structs.replace(prescription, lines=lines, prescriber=prescriber)


def mandatory_errors(prescription: Prescription, today: date) -> list[FieldError]:
    """Every broken structural rule at once (answered 400: such a prescription is not kept)."""
    errors: list[FieldError] = []
    rpps = prescription.prescriber.rpps
    if rpps is not None and not rpps_is_valid(rpps):
        errors.append(FieldError("prescriber.rpps", "not a valid RPPS (11 digits, Luhn key)"))
    if prescription.prescribed_on > today:
        errors.append(FieldError("prescribed_on", "must not be in the future"))
    if prescription.valid_until and prescription.valid_until < prescription.prescribed_on:
        errors.append(FieldError("valid_until", "must not be before prescribed_on"))
    if not prescription.lines:
        errors.append(FieldError("lines", "a prescription needs at least one line"))
    for index, line in enumerate(prescription.lines):
        key = f"lines.{index}"
        if not (line.cis or line.cip13 or line.label):
            errors.append(FieldError(key, "give a CIS, a CIP13 or a label"))
        if line.cis and not (len(line.cis) == 8 and line.cis.isdigit()):
            errors.append(FieldError(f"{key}.cis", "a CIS has 8 digits"))
        if line.cip13 and not cip13_is_valid(line.cip13):
            errors.append(FieldError(f"{key}.cip13", "not a valid CIP13 (EAN-13 key)"))
        named = [("posology", line.posology)] + [
            (f"more_posologies.{i}", item) for i, item in enumerate(line.more_posologies)
        ]
        for path, posology in named:
            if posology.dose is not None and posology.unit is None:
                errors.append(FieldError(f"{key}.{path}.unit", "a dose needs its unit"))
            if (
                posology.times_of_day
                and posology.times_per_day is not None
                and posology.times_per_day != len(set(posology.times_of_day))
            ):
                errors.append(
                    FieldError(f"{key}.{path}.times_per_day", "does not match times_of_day")
                )
    return errors


def valid_until(prescription: Prescription) -> date:
    return prescription.valid_until or add_months(
        prescription.prescribed_on, DEFAULT_VALIDITY_MONTHS
    )


def line_end(prescribed_on: date, posology: Posology, renewals: int) -> date | None:
    """Planned last day of a line: its duration times (1 + renewals); None when unknown."""
    duration = posology.duration
    if duration is None:
        return None
    count = duration.value * (renewals + 1)
    if duration.unit == "month":
        return add_months(prescribed_on, count)
    days = count * (7 if duration.unit == "week" else 1)
    return prescribed_on + timedelta(days=days)


def treatment_end(prescription: Prescription) -> date:
    """Planned end of the whole prescription: the latest line end, or its validity when no
    line says how long it lasts."""
    ends = [
        end
        for line in prescription.lines
        if (end := line_end(prescription.prescribed_on, line.posology, prescription.renewals))
    ]
    return max(ends) if ends else valid_until(prescription)


def is_active(prescription: Prescription, as_of: date) -> bool:
    return prescription.prescribed_on <= as_of <= treatment_end(prescription)


def _line_key(line: PrescriptionLine, product: Product | None) -> tuple[str, ...]:
    if product is not None:
        return ("cis", product.cis)
    return ("label", (line.label or "").casefold())


def validate(
    prescription: Prescription,
    products: Mapping[int, Product | None],
    as_of: date,
    *,
    age: int | None = None,
    doses: DoseTable | None = None,
) -> ValidationReport:
    """Findings about a well-formed prescription: unknown product, expiry, duplicated line,
    incomplete posology; the posology range check says per line whether it could be made.

    ``products`` maps a line index to the catalog's product, ``None`` when the catalog does
    not know the CIS/CIP13 given; free-text lines are absent from it. ``age`` (the patient's,
    on ``as_of``) selects the older-patient maximum where the RCP sets one.
    """
    table = doses or load_table()
    findings: list[Finding] = []
    expiry = valid_until(prescription)
    if as_of > expiry:
        findings.append(
            Finding(
                code="expired",
                severity="error",
                message=f"valid for a first dispensing until {expiry.isoformat()}",
            )
        )
    seen: dict[tuple[str, ...], int] = {}
    ranges: list[str] = []
    for index, line in enumerate(prescription.lines):
        product = products.get(index)
        if (line.cis or line.cip13) and product is None:
            findings.append(
                Finding(
                    code="unknown_product",
                    severity="error",
                    message="the catalog knows no product with this CIS/CIP13",
                    line=index,
                )
            )
        elif not (line.cis or line.cip13):
            findings.append(
                Finding(
                    code="free_text_product",
                    severity="info",
                    message="product given as text only: no catalog check",
                    line=index,
                )
            )
        key = _line_key(line, product)
        if key in seen:
            findings.append(
                Finding(
                    code="duplicate_line",
                    severity="warning",
                    message=f"same product as line {seen[key]}",
                    line=index,
                )
            )
        else:
            seen[key] = index
        posology = line.posology
        frequency = posology.times_per_day is not None or bool(posology.times_of_day)
        if not posology.as_needed and (posology.dose is None or not frequency):
            findings.append(
                Finding(
                    code="posology_incomplete",
                    severity="warning",
                    message="dose or frequency missing (see the original text)",
                    line=index,
                )
            )
        verdict = check_line((posology, *line.more_posologies), product, age, table)
        if verdict.over:
            findings.append(
                Finding(
                    code="dose_above_maximum",
                    severity="warning",
                    message=verdict.text.removeprefix("checked: "),
                    line=index,
                )
            )
        ranges.append(verdict.text)
    valid = not any(f.severity == "error" for f in findings)
    return ValidationReport(as_of=as_of, valid=valid, findings=findings, posology_range=ranges)
