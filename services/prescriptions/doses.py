"""The "posology outside the usual range" check: daily dose of a line against the RCP maximum.

The ceilings are data (``data/max_daily_doses.toml``, each with its RCP source, its doubt and
whether a pharmacist verified it), so correcting or adding one is a data change. The check
itself is pure: a line, its catalog product and the patient's age in, a verdict out. It only
answers when it can compute a daily dose in mg without guessing (a mass unit, or a count of
units of a single-substance product whose name states one strength); otherwise it says why
it did not check.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path

import msgspec

from services.medications.logic import fold
from services.prescriptions.models import Posology, Product

DATA_FILE = Path(__file__).resolve().parent / "data" / "max_daily_doses.toml"

SALT_WORDS = frozenset(
    {
        "DE",
        "D",
        "BASE",
        "ANHYDRE",
        "ANHYDREE",
        "MONOHYDRATE",
        "MONOHYDRATEE",
        "TRIHYDRATE",
        "TRIHYDRATEE",
        "HEMIHYDRATE",
        "SODIQUE",
        "CALCIQUE",
        "POTASSIQUE",
        "CHLORHYDRATE",
        "DICHLORHYDRATE",
        "TARTRATE",
        "OXALATE",
        "BESILATE",
        "MALEATE",
        "FUMARATE",
        "MESILATE",
        "SUCCINATE",
        "CILEXETIL",
        "PHOSPHATE",
        "SULFATE",
    }
)
"""Words a BDPM moiety name may carry beside the substance (``TARTRATE DE ZOLPIDEM``)."""

MASS_UNITS = {"mg": 1.0, "g": 1000.0, "µg": 0.001, "ug": 0.001, "mcg": 0.001}
COUNT_UNITS = frozenset(
    {
        "comprime",
        "comprimes",
        "cp",
        "gelule",
        "gelules",
        "capsule",
        "capsules",
        "sachet",
        "sachets",
        "dose",
        "doses",
    }
)
_STRENGTH = re.compile(r"(\d+(?:[.,]\d+)?)\s*(mg|g|microgrammes?|µg)\b", re.IGNORECASE)


class MaxDose(msgspec.Struct, frozen=True, kw_only=True):
    substance: str
    max_mg_per_day: float
    source: str
    verified: bool
    max_mg_per_day_elderly: float | None = None
    elderly_from_age: int | None = None
    doubt: str | None = None


class DoseTable(msgspec.Struct, frozen=True, kw_only=True):
    edition: str
    format: int
    dose: list[MaxDose]


class DoseVerdict(msgspec.Struct, frozen=True, kw_only=True):
    checked: bool
    over: bool
    text: str
    """``checked: ...`` or ``not checked: <why>``, as the validation report shows it."""


@cache
def load_table(path: Path = DATA_FILE) -> DoseTable:
    return msgspec.convert(tomllib.loads(path.read_text(encoding="utf-8")), DoseTable)


def _matches(entry: MaxDose, moiety: str) -> bool:
    wanted = set(fold(entry.substance).split())
    words = set(fold(moiety).split())
    return wanted <= words and not (words - wanted - SALT_WORDS)


def max_dose_for(product: Product, table: DoseTable) -> MaxDose | None:
    """The table's entry for a single-substance product, if any."""
    if len(product.substances) != 1:
        return None
    moiety = product.substances[0][1]
    return next((e for e in table.dose if _matches(e, moiety)), None)


def unit_strength_mg(product: Product) -> float | None:
    """The strength per unit stated in the speciality's name (``DOLIPRANE 1000 mg``): the
    labelled strength the RCP doses refer to; ``None`` unless the name states exactly one."""
    found = _STRENGTH.findall(product.name)
    if len(found) != 1:
        return None
    value, unit = found[0]
    factor = {"mg": 1.0, "g": 1000.0}.get(unit.lower(), 0.001)
    return float(value.replace(",", ".")) * factor


def daily_mg(posology: Posology, product: Product) -> float | None:
    times = posology.times_per_day or (len(posology.times_of_day) or None)
    if posology.dose is None or times is None or posology.unit is None:
        return None
    unit = fold(posology.unit).lower()
    if posology.unit.strip().lower() in MASS_UNITS:
        return posology.dose * MASS_UNITS[posology.unit.strip().lower()] * times
    if unit in COUNT_UNITS:
        strength = unit_strength_mg(product)
        return None if strength is None else posology.dose * strength * times
    return None


def line_daily_mg(posologies: tuple[Posology, ...], product: Product) -> float | None:
    """The line's highest daily dose: instructions of the same sequence add up (morning and
    evening doses), successive sequences do not (a taper's steps): the largest counts."""
    by_step: dict[int | None, float] = {}
    for item in posologies:
        dose = daily_mg(item, product)
        if dose is None:
            return None
        by_step[item.sequence] = by_step.get(item.sequence, 0.0) + dose
    together = by_step.pop(None, 0.0)
    return max([together + step for step in by_step.values()] or [together])


def _mg(value: float) -> str:
    return f"{value:g} mg/day"


def check_line(
    posology: Posology | tuple[Posology, ...],
    product: Product | None,
    age: int | None,
    table: DoseTable,
) -> DoseVerdict:
    """Compare the line's daily dose with the RCP maximum (the older-patient one when the
    patient's age reaches it). Unverified table values are said to be so."""
    if product is None:
        return DoseVerdict(checked=False, over=False, text="not checked: no catalog product")
    entry = max_dose_for(product, table)
    if entry is None:
        return DoseVerdict(
            checked=False,
            over=False,
            text="not checked: no RCP maximum daily dose in the table for this product",
        )
    posologies = posology if isinstance(posology, tuple) else (posology,)
    dose = line_daily_mg(posologies, product)
    if dose is None:
        return DoseVerdict(
            checked=False,
            over=False,
            text="not checked: the daily dose in mg cannot be computed from this posology",
        )
    limit = entry.max_mg_per_day
    who = "adults"
    if (
        entry.max_mg_per_day_elderly is not None
        and entry.elderly_from_age is not None
        and age is not None
        and age >= entry.elderly_from_age
    ):
        limit, who = entry.max_mg_per_day_elderly, f"{entry.elderly_from_age} years and over"
    caveat = "" if entry.verified else "; table value not yet verified against the RCP in force"
    doubt = f"; doubt: {entry.doubt}" if entry.doubt else ""
    if dose > limit:
        return DoseVerdict(
            checked=True,
            over=True,
            text=f"checked: {_mg(dose)} exceeds the maximum of {_mg(limit)} for {who} "
            f"({entry.source}{caveat}{doubt})",
        )
    return DoseVerdict(
        checked=True,
        over=False,
        text=f"checked: {_mg(dose)} within the maximum of {_mg(limit)} for {who} "
        f"({entry.source}{caveat})",
    )
