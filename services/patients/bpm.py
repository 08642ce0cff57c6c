"""Bilan Partagé de Médication: the record of one yearly cycle and its state machine (pure).

The pharmaceutical convention splits a BPM into steps, done in order by a pharmacist:

* first year: adhesion (the patient's signed consent), entretien de recueil, analyse des
  traitements, transmission of the analysis to the médecin traitant, entretien conseil,
  suivi d'observance;
* each following year: an entretien de suivi, then, when the treatments changed, a new
  analyse, its transmission and an entretien conseil, and in every case a suivi
  d'observance.

A cycle is one such year. Each recorded step is a new version of the cycle (who, when,
what), so the history of a BPM is the version history. This module holds the shapes and
the rules only; the API applies them inside a store transaction.

The convention fixes no deadline per step, so Hygie computes none: the pharmacist plans
the next step(s) with a due date of their own choosing (a :class:`FollowUp`, kept in the
cycle so that planning, replanning and cancelling are versions with history too). The only
date Hygie computes is the yearly anniversary of the cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

from appliance.fieldcrypto import FieldCipher
from services.patients.logic import aad
from services.patients.models import Consent, Note, UserId, Version

StepKind = Literal[
    "adhesion", "recueil", "analyse", "transmission", "conseil", "suivi", "observance"
]
CycleStatus = Literal["in_progress", "completed", "abandoned"]
StepState = Literal["done", "pending", "not_required"]
AbandonReason = Literal[
    "patient_withdrew", "patient_deceased", "patient_moved", "not_eligible", "other"
]
PatientRef = Annotated[
    str,
    msgspec.Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]

INITIAL_STEPS: tuple[StepKind, ...] = (
    "adhesion",
    "recueil",
    "analyse",
    "transmission",
    "conseil",
    "observance",
)
FOLLOW_UP_STEPS: tuple[StepKind, ...] = (
    "suivi",
    "analyse",
    "transmission",
    "conseil",
    "observance",
)
"""A following year when the treatments changed (the plan assumed until the suivi says so)."""
FOLLOW_UP_UNCHANGED: tuple[StepKind, ...] = ("suivi", "observance")


class BpmStep(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: StepKind
    performed_on: date
    pharmacist: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    """User id of the pharmacist who performed the step."""
    notes: Note | None = None
    treatments_changed: bool | None = None
    """Only on ``suivi``: whether the treatments changed since the last analysis."""


class BpmCycle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    patient_id: str
    year: Annotated[int, msgspec.Meta(ge=1, le=100)]
    """1 for the first BPM of the patient, 2 for the first following year, and so on."""
    opened_on: date
    status: CycleStatus = "in_progress"
    steps: tuple[BpmStep, ...] = ()
    closed_on: date | None = None
    abandon_reason: AbandonReason | None = None
    follow_ups: tuple[FollowUp, ...] = ()
    """Planned steps; absent from cycles stored before follow-ups existed (empty)."""


class StoredBpmCycle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A cycle as stored: step notes taken out and sealed under the field key."""

    cycle_id: str
    cycle: BpmCycle
    sealed: dict[str, str] = {}


class BpmOpen(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    patient_id: PatientRef
    opened_on: date | None = None
    """Defaults to today."""


class StepInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    expected_version: Version
    kind: StepKind
    performed_on: date
    pharmacist: UserId | None = None
    """Who performed the step; defaults to the signed-in user."""
    notes: Note | None = None
    treatments_changed: bool | None = None


class AbandonInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    expected_version: Version
    closed_on: date
    reason: AbandonReason


class StepView(msgspec.Struct, frozen=True, kw_only=True):
    kind: StepKind
    state: StepState
    performed_on: date | None = None
    pharmacist: str | None = None
    notes: str | None = None
    treatments_changed: bool | None = None


class BpmView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    patient_id: str
    year: int
    opened_on: date
    status: CycleStatus
    next_step: StepKind | None
    steps: list[StepView]
    closed_on: date | None
    abandon_reason: AbandonReason | None
    follow_ups: list[FollowUpView]
    version: int
    recorded_at: datetime
    recorded_by: str


class BpmRuleError(Exception):
    """A step or cycle the convention does not allow now; ``status`` is the HTTP answer."""

    def __init__(self, status: int, slug: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.slug = slug


class FollowUp(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A step the pharmacist planned for a date they chose (at most one per step kind)."""

    kind: StepKind
    due_on: date
    planned_by: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    planned_on: date


class FollowUpInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    expected_version: Version
    kind: StepKind
    due_on: date
    """Chosen by the pharmacist; today or later."""


class FollowUpCancel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    expected_version: Version
    kind: StepKind


class FollowUpView(msgspec.Struct, frozen=True, kw_only=True):
    kind: StepKind
    due_on: date
    planned_by: str
    planned_on: date
    done: bool
    done_on: date | None
    overdue: bool
    """Not done, cycle still in progress, and the due date is before today."""


class DueFollowUp(msgspec.Struct, frozen=True, kw_only=True):
    """A follow-up of an open cycle, for the counter's to-do list."""

    cycle_id: str
    patient_id: str
    year: int
    follow_up: FollowUpView


CycleChange = Callable[[BpmCycle, Consent | None], BpmCycle]
"""A rule applied to a cycle, given the patient's BPM consent in force."""

# --------------------------------------------------------------------------- the machine


def planned_steps(cycle: BpmCycle) -> tuple[StepKind, ...]:
    """The steps this cycle goes through, as far as they are known now."""
    if cycle.year == 1:
        return INITIAL_STEPS
    suivi = next((s for s in cycle.steps if s.kind == "suivi"), None)
    if suivi is not None and suivi.treatments_changed is False:
        return FOLLOW_UP_UNCHANGED
    return FOLLOW_UP_STEPS


def next_step(cycle: BpmCycle) -> StepKind | None:
    """The only step that may be recorded now (``None`` once the cycle is closed)."""
    if cycle.status != "in_progress":
        return None
    plan = planned_steps(cycle)
    return plan[len(cycle.steps)] if len(cycle.steps) < len(plan) else None


def _check_date(cycle: BpmCycle, on: date, today: date, what: str) -> None:
    if on > today:
        raise BpmRuleError(400, "bpm-date", f"{what} must not be in the future")
    last = cycle.steps[-1].performed_on if cycle.steps else cycle.opened_on
    if on < last:
        raise BpmRuleError(
            400, "bpm-date", f"{what} must not be before {last.isoformat()} (previous step)"
        )


def adhesion_consent_problem(consent: Consent | None, on: date) -> str | None:
    """Why the patient's BPM consent does not allow a step on ``on`` (None when it does)."""
    if consent is None or consent.status != "granted":
        return "the patient's BPM adhesion consent is not recorded as granted"
    if consent.decided_on > on:
        return "the BPM adhesion consent is dated after this step"
    return None


def record_step(
    cycle: BpmCycle,
    kind: StepKind,
    *,
    performed_on: date,
    pharmacist: str,
    notes: str | None,
    treatments_changed: bool | None,
    today: date,
    consent: Consent | None,
) -> BpmCycle:
    """The cycle with one more step, or :class:`BpmRuleError` when it is not the time for it."""
    expected = next_step(cycle)
    if cycle.status != "in_progress":
        raise BpmRuleError(409, "bpm-closed", f"this BPM cycle is {cycle.status}")
    if kind != expected:
        raise BpmRuleError(
            409, "bpm-step-order", f"the next step of this BPM cycle is '{expected}', not '{kind}'"
        )
    _check_date(cycle, performed_on, today, "performed_on")
    if (kind == "suivi") != (treatments_changed is not None):
        raise BpmRuleError(
            400,
            "bpm-treatments-changed",
            "treatments_changed is required on the 'suivi' step and only there",
        )
    problem = adhesion_consent_problem(consent, performed_on)
    if problem:
        raise BpmRuleError(409, "bpm-consent", problem)
    step = BpmStep(
        kind=kind,
        performed_on=performed_on,
        pharmacist=pharmacist,
        notes=notes,
        treatments_changed=treatments_changed,
    )
    updated = msgspec.structs.replace(cycle, steps=(*cycle.steps, step))
    if next_step(updated) is None:
        updated = msgspec.structs.replace(updated, status="completed", closed_on=performed_on)
    return updated


def abandon(cycle: BpmCycle, *, closed_on: date, reason: AbandonReason, today: date) -> BpmCycle:
    """Close an unfinished cycle (the patient withdrew, moved, died...)."""
    if cycle.status != "in_progress":
        raise BpmRuleError(409, "bpm-closed", f"this BPM cycle is {cycle.status}")
    _check_date(cycle, closed_on, today, "closed_on")
    return msgspec.structs.replace(
        cycle, status="abandoned", closed_on=closed_on, abandon_reason=reason
    )


def open_cycle(
    patient_id: str,
    existing: Sequence[BpmCycle],
    *,
    opened_on: date,
    today: date,
    consent: Consent | None,
) -> BpmCycle:
    """A new cycle: the first year, or the next year once the previous one is completed.

    A following year opens in a later calendar year than the last completed cycle; an
    abandoned cycle does not count, so the same year is started again.
    """
    if opened_on > today:
        raise BpmRuleError(400, "bpm-date", "opened_on must not be in the future")
    if any(c.status == "in_progress" for c in existing):
        raise BpmRuleError(409, "bpm-already-open", "this patient already has a BPM in progress")
    completed = [c for c in existing if c.status == "completed"]
    if not completed:
        return BpmCycle(patient_id=patient_id, year=1, opened_on=opened_on)
    last = max(completed, key=lambda c: c.year)
    if opened_on.year <= last.opened_on.year:
        raise BpmRuleError(
            409,
            "bpm-too-early",
            f"year {last.year} was opened in {last.opened_on.year}: the following year's "
            f"cycle opens from {last.opened_on.year + 1}",
        )
    problem = adhesion_consent_problem(consent, opened_on)
    if problem:
        raise BpmRuleError(409, "bpm-consent", problem)
    return BpmCycle(patient_id=patient_id, year=last.year + 1, opened_on=opened_on)


def step_views(cycle: BpmCycle) -> list[StepView]:
    """Done steps, then the planned ones still to do (or no longer needed once closed)."""
    views = [
        StepView(
            kind=s.kind,
            state="done",
            performed_on=s.performed_on,
            pharmacist=s.pharmacist,
            notes=s.notes,
            treatments_changed=s.treatments_changed,
        )
        for s in cycle.steps
    ]
    remaining = planned_steps(cycle)[len(cycle.steps) :]
    state: StepState = "pending" if cycle.status == "in_progress" else "not_required"
    views.extend(StepView(kind=kind, state=state) for kind in remaining)
    return views


# --------------------------------------------------------------------------- follow-ups


def _done(cycle: BpmCycle, kind: StepKind) -> BpmStep | None:
    """The recorded step of this kind (a kind occurs at most once in a cycle's plan)."""
    return next((s for s in cycle.steps if s.kind == kind), None)


def plan_follow_up(
    cycle: BpmCycle, kind: StepKind, *, due_on: date, planned_by: str, today: date
) -> BpmCycle:
    """Plan (or replan) a step of this cycle for a date the pharmacist chose."""
    if cycle.status != "in_progress":
        raise BpmRuleError(409, "bpm-closed", f"this BPM cycle is {cycle.status}")
    if _done(cycle, kind) is not None:
        raise BpmRuleError(409, "bpm-step-done", f"the step '{kind}' is already done")
    if kind not in planned_steps(cycle):
        raise BpmRuleError(
            400, "bpm-follow-up-kind", f"the step '{kind}' is not part of this BPM cycle"
        )
    if due_on < today:
        raise BpmRuleError(400, "bpm-date", "due_on must not be in the past")
    plan = FollowUp(kind=kind, due_on=due_on, planned_by=planned_by, planned_on=today)
    others = tuple(f for f in cycle.follow_ups if f.kind != kind)
    ordered = tuple(sorted((*others, plan), key=lambda f: (f.due_on, f.kind)))
    return msgspec.structs.replace(cycle, follow_ups=ordered)


def cancel_follow_up(cycle: BpmCycle, kind: StepKind) -> BpmCycle:
    """Drop the plan of a step not done yet (the plan stays in the cycle's history)."""
    if cycle.status != "in_progress":
        raise BpmRuleError(409, "bpm-closed", f"this BPM cycle is {cycle.status}")
    if _done(cycle, kind) is not None:
        raise BpmRuleError(409, "bpm-step-done", f"the step '{kind}' is already done")
    if not any(f.kind == kind for f in cycle.follow_ups):
        raise BpmRuleError(404, "not-found", f"no follow-up planned for the step '{kind}'")
    return msgspec.structs.replace(
        cycle, follow_ups=tuple(f for f in cycle.follow_ups if f.kind != kind)
    )


def follow_up_views(cycle: BpmCycle, today: date) -> list[FollowUpView]:
    """The plans, by due date, each done once its step is recorded, or overdue."""
    views = []
    for plan in cycle.follow_ups:
        step = _done(cycle, plan.kind)
        views.append(
            FollowUpView(
                kind=plan.kind,
                due_on=plan.due_on,
                planned_by=plan.planned_by,
                planned_on=plan.planned_on,
                done=step is not None,
                done_on=step.performed_on if step else None,
                overdue=step is None and cycle.status == "in_progress" and plan.due_on < today,
            )
        )
    return views


# --------------------------------------------------------------------------- sealing


def seal_cycle(cycle_id: str, cycle: BpmCycle, cipher: FieldCipher) -> StoredBpmCycle:
    """Step notes encrypted, bound to this cycle and the step's position."""
    sealed: dict[str, str] = {}
    for i, step in enumerate(cycle.steps):
        if step.notes is not None:
            path = f"steps.{i}.notes"
            sealed[path] = cipher.encrypt(step.notes, aad("bpm", cycle_id, path))
    steps = tuple(msgspec.structs.replace(s, notes=None) for s in cycle.steps)
    return StoredBpmCycle(
        cycle_id=cycle_id, cycle=msgspec.structs.replace(cycle, steps=steps), sealed=sealed
    )


def unseal_cycle(stored: StoredBpmCycle, cipher: FieldCipher) -> BpmCycle:
    steps = []
    for i, step in enumerate(stored.cycle.steps):
        path = f"steps.{i}.notes"
        token = stored.sealed.get(path)
        notes = cipher.decrypt(token, aad("bpm", stored.cycle_id, path)) if token else None
        steps.append(msgspec.structs.replace(step, notes=notes))
    return msgspec.structs.replace(stored.cycle, steps=tuple(steps))


def cycle_replica(stored: StoredBpmCycle, version: int, pseudonym: str) -> dict[str, object]:
    """A BPM state change as the cloud side receives it (outbox ``bpm``): states, step
    kinds and dates, keyed by the patient's pseudonym; no notes, no patient id."""
    cycle = stored.cycle
    return {
        "pseudonym": pseudonym,
        "cycle_id": stored.cycle_id,
        "version": version,
        "year": cycle.year,
        "status": cycle.status,
        "opened_on": cycle.opened_on.isoformat(),
        "closed_on": cycle.closed_on.isoformat() if cycle.closed_on else None,
        "abandon_reason": cycle.abandon_reason,
        "steps": [
            {
                "kind": step.kind,
                "performed_on": step.performed_on.isoformat(),
                "pharmacist": step.pharmacist,
                "treatments_changed": step.treatments_changed,
            }
            for step in cycle.steps
        ],
        "follow_ups": [
            {"kind": plan.kind, "due_on": plan.due_on.isoformat()} for plan in cycle.follow_ups
        ],
    }
