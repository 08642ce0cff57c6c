"""BPM eligibility: a pure function of the birth date, the substances' treatment periods and
the day of the assessment, under a rule kept as data (``bpm_eligibility.toml``).

The analysis engine reuses :func:`bpm_eligibility` as is; gathering the periods (from
prescriptions and dispensing lines, through the medications catalog) is the caller's job.
"""

from __future__ import annotations

import calendar
import tomllib
from collections.abc import Iterable
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import msgspec

RULE_FILE = Path(__file__).with_name("bpm_eligibility.toml")


class Assumptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    dispensing_days_per_box: int = 30
    gap_tolerance_days: int = 15
    lookback_months: int = 12


class EligibilityRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    in_force_from: date
    source: str
    min_age_years: int
    min_substances: int
    min_months: int
    assumptions: Assumptions = Assumptions()


class SubstancePeriod(msgspec.Struct, frozen=True, kw_only=True):
    """One substance taken (or planned) from ``start`` to ``end`` (both included)."""

    substance: str
    """BDPM substance code of the active moiety (a combination gives one period per moiety)."""
    name: str
    start: date
    end: date
    source: str
    """Where it comes from, by id: ``prescription:<id>`` or ``dispensing:<id>``."""


class SubstanceRun(msgspec.Struct, frozen=True, kw_only=True):
    substance: str
    name: str
    start: date
    end: date
    qualifies: bool
    sources: list[str]


class Eligibility(msgspec.Struct, frozen=True, kw_only=True):
    eligible: bool
    as_of: date
    age: int
    rule: str
    substance_count: int
    """Distinct substances with a run of at least the rule's duration."""
    substances: list[SubstanceRun]
    """The longest run of every substance seen, qualifying or not."""
    reasons: list[str]


def add_months(day: date, months: int) -> date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def age_on(birth_date: date, day: date) -> int:
    """Full years: 65 on the 65th birthday (29 February: on 1 March in other years)."""
    before = (day.month, day.day) < (birth_date.month, birth_date.day)
    return day.year - birth_date.year - int(before)


def load_rules(path: Path = RULE_FILE) -> list[EligibilityRule]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    rules = msgspec.convert(data.get("rules", []), list[EligibilityRule])
    return sorted(rules, key=lambda r: r.in_force_from)


@cache
def _bundled_rules() -> tuple[EligibilityRule, ...]:
    return tuple(load_rules())


def rule_in_force(as_of: date, rules: Iterable[EligibilityRule] | None = None) -> EligibilityRule:
    """The latest rule in force on ``as_of`` (the earliest one before any is in force)."""
    candidates = sorted(rules or _bundled_rules(), key=lambda r: r.in_force_from)
    if not candidates:
        raise ValueError("no BPM eligibility rule")
    in_force = [r for r in candidates if r.in_force_from <= as_of]
    return in_force[-1] if in_force else candidates[0]


def _runs(periods: list[SubstancePeriod], rule: EligibilityRule, as_of: date) -> list[SubstanceRun]:
    window_start = add_months(as_of, -rule.assumptions.lookback_months)
    gap = timedelta(days=rule.assumptions.gap_tolerance_days)
    by_substance: dict[str, list[SubstancePeriod]] = {}
    for period in periods:
        if period.end < window_start or period.start > as_of or period.end < period.start:
            continue  # outside the window, planned later, or nonsense
        by_substance.setdefault(period.substance, []).append(period)
    best: list[SubstanceRun] = []
    for substance, items in sorted(by_substance.items()):
        items.sort(key=lambda p: (p.start, p.end))
        runs: list[SubstanceRun] = []
        for period in items:
            start = max(period.start, window_start)
            current = runs[-1] if runs else None
            if current is not None and start <= current.end + gap:
                runs[-1] = msgspec.structs.replace(
                    current,
                    end=max(current.end, period.end),
                    sources=[*current.sources, period.source],
                )
            else:
                runs.append(
                    SubstanceRun(
                        substance=substance,
                        name=period.name,
                        start=start,
                        end=period.end,
                        qualifies=False,
                        sources=[period.source],
                    )
                )
        scored = [
            msgspec.structs.replace(
                run, qualifies=add_months(run.start, rule.min_months) <= run.end
            )
            for run in runs
        ]
        best.append(max(scored, key=lambda r: (r.qualifies, r.end - r.start)))
    return best


def bpm_eligibility(
    birth_date: date,
    substance_periods: Iterable[SubstancePeriod],
    as_of: date,
    rule: EligibilityRule | None = None,
) -> Eligibility:
    """Whether a patient may enter the BPM on ``as_of``, and why (or why not).

    A substance counts when its periods (merged across products, prescriptions and
    dispensings) make one run of at least ``min_months``, retrospective or planned: a run
    may end after ``as_of`` when a prescription plans it.
    """
    rule = rule or rule_in_force(as_of)
    age = age_on(birth_date, as_of)
    runs = _runs(list(substance_periods), rule, as_of)
    count = sum(1 for run in runs if run.qualifies)
    reasons: list[str] = []
    old_enough = age >= rule.min_age_years
    reasons.append(f"aged {age}: {'at least' if old_enough else 'under'} {rule.min_age_years}")
    enough = count >= rule.min_substances
    reasons.append(
        f"{count} different active substance(s) over at least {rule.min_months} months: "
        f"{'at least' if enough else 'fewer than'} {rule.min_substances}"
    )
    return Eligibility(
        eligible=old_enough and enough,
        as_of=as_of,
        age=age,
        rule=rule.id,
        substance_count=count,
        substances=runs,
        reasons=reasons,
    )
