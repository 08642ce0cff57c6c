"""HTTP API of BPM cycles: open a year, record its steps in order, abandon, read, history.

The rules are in :mod:`services.patients.bpm`; this layer loads the cycle and the patient's
consent, applies them inside one write transaction (so two counters cannot both open a cycle
or record the same step), seals the step notes and audits every access.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Annotated, NoReturn
from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter, QueryParameter

from appliance.audit import AuditLog
from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import requires
from appliance.store import Store, VersionConflictError, Versioned
from services.patients import bpm, logic
from services.patients import store as repository
from services.patients.api import CONTROLLER_OPTIONS, existing_patient, record, today
from services.patients.bpm import (
    AbandonInput,
    BpmCycle,
    BpmOpen,
    BpmView,
    DueFollowUp,
    FollowUpCancel,
    FollowUpInput,
    StepInput,
    StoredBpmCycle,
)
from services.patients.models import Consent

OBJECT_TYPE = "bpm_cycle"


def _view(item: Versioned[StoredBpmCycle], crypto: logic.PatientCrypto, now: date) -> BpmView:
    """The cycle as read; ``now`` (the pharmacy's today) decides which follow-ups are late."""
    cycle = bpm.unseal_cycle(item.entity, crypto.cipher)
    return BpmView(
        id=item.entity_id,
        patient_id=cycle.patient_id,
        year=cycle.year,
        opened_on=cycle.opened_on,
        status=cycle.status,
        next_step=bpm.next_step(cycle),
        steps=bpm.step_views(cycle),
        closed_on=cycle.closed_on,
        abandon_reason=cycle.abandon_reason,
        follow_ups=bpm.follow_up_views(cycle, now),
        version=item.version,
        recorded_at=item.recorded_at,
        recorded_by=item.recorded_by,
    )


def _refuse(
    audit: AuditLog, ctx: RequestContext, action: str, object_id: str, exc: bpm.BpmRuleError
) -> NoReturn:
    record(audit, ctx, action, OBJECT_TYPE, [object_id], outcome="refused")
    raise Problem(exc.status, exc.slug, str(exc)) from exc


def _existing(
    st: Store, audit: AuditLog, ctx: RequestContext, cycle_id: str, action: str
) -> Versioned[StoredBpmCycle]:
    item = repository.get_cycle(st, cycle_id)
    if item is None:
        record(audit, ctx, action, OBJECT_TYPE, [cycle_id], outcome="not_found")
        raise Problem(404, "not-found", f"no BPM cycle '{cycle_id}'")
    return item


def _consent(st: Store, patient_id: str) -> Consent | None:
    patient = existing_patient(st, patient_id).entity.record
    return logic.consent_in_force(patient.consents, "bpm_adhesion")


class BpmController(Controller):
    path = "/api/v1/bpm"
    tags = ["bpm"]
    dependencies = CONTROLLER_OPTIONS["dependencies"]
    exception_handlers = CONTROLLER_OPTIONS["exception_handlers"]

    @post("/", guards=[requires("bpm:write")], sync_to_thread=True)
    def open_cycle(
        self,
        data: JSONBody[BpmOpen],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> BpmView:
        """Open the patient's first BPM, or the following year's once the last is completed."""
        cycle_id = str(uuid.uuid4())
        now = today(platform)
        with store.write():
            try:
                consent = _consent(store, data.patient_id)
            except Problem:
                record(audit, ctx, "create", OBJECT_TYPE, [data.patient_id], outcome="not_found")
                raise
            existing = [
                bpm.unseal_cycle(item.entity, crypto.cipher)
                for item in repository.cycles_of(store, data.patient_id)
            ]
            try:
                cycle = bpm.open_cycle(
                    data.patient_id,
                    existing,
                    opened_on=data.opened_on or now,
                    today=now,
                    consent=consent,
                )
            except bpm.BpmRuleError as exc:
                _refuse(audit, ctx, "create", data.patient_id, exc)
            saved = repository.save_cycle(
                store,
                bpm.seal_cycle(cycle_id, cycle, crypto.cipher),
                actor=ctx.actor,
                expected_version=0,
            )
        record(audit, ctx, "create", OBJECT_TYPE, [cycle_id])
        return _view(saved, crypto, now)

    @get("/", guards=[requires("bpm:read")], sync_to_thread=True)
    def list_cycles(
        self,
        patient_id: Annotated[UUID, Parameter(description="the patient whose cycles to list")],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> list[BpmView]:
        """Every BPM cycle of a patient, first year first."""
        items = repository.cycles_of(store, str(patient_id))
        now = today(platform)
        views = [_view(item, crypto, now) for item in items]
        record(audit, ctx, "search", OBJECT_TYPE, [item.entity_id for item in items])
        return views

    @get("/{cycle_id:uuid}", guards=[requires("bpm:read")], sync_to_thread=True)
    def get_cycle(
        self,
        cycle_id: FromPath[UUID],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> BpmView:
        item = _existing(store, audit, ctx, str(cycle_id), "read")
        view = _view(item, crypto, today(platform))
        record(audit, ctx, "read", OBJECT_TYPE, [item.entity_id])
        return view

    @get("/{cycle_id:uuid}/history", guards=[requires("bpm:read")], sync_to_thread=True)
    def cycle_history(
        self,
        cycle_id: FromPath[UUID],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> list[BpmView]:
        """Every version of the cycle: one per recorded step or plan, with who and when."""
        item = _existing(store, audit, ctx, str(cycle_id), "history")
        now = today(platform)
        views = [_view(v, crypto, now) for v in repository.cycle_history(store, item.entity_id)]
        record(audit, ctx, "history", OBJECT_TYPE, [item.entity_id])
        return views

    def _change(
        self,
        store: Store,
        audit: AuditLog,
        ctx: RequestContext,
        crypto: logic.PatientCrypto,
        cycle_id: str,
        expected_version: int,
        action: str,
        apply: bpm.CycleChange,
        now: date,
    ) -> BpmView:
        with store.write():
            item = _existing(store, audit, ctx, cycle_id, action)
            if item.version != expected_version:
                record(audit, ctx, action, OBJECT_TYPE, [cycle_id], outcome="conflict")
                raise VersionConflictError("bpm_cycles", cycle_id, expected_version, item.version)
            cycle = bpm.unseal_cycle(item.entity, crypto.cipher)
            try:
                changed = apply(cycle, _consent(store, cycle.patient_id))
            except bpm.BpmRuleError as exc:
                _refuse(audit, ctx, action, cycle_id, exc)
            saved = repository.save_cycle(
                store,
                bpm.seal_cycle(cycle_id, changed, crypto.cipher),
                actor=ctx.actor,
                expected_version=expected_version,
            )
        record(audit, ctx, action, OBJECT_TYPE, [cycle_id])
        return _view(saved, crypto, now)

    @post(
        "/{cycle_id:uuid}/steps",
        guards=[requires("bpm:write")],
        sync_to_thread=True,
        status_code=200,
    )
    def record_step(
        self,
        cycle_id: FromPath[UUID],
        data: JSONBody[StepInput],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> BpmView:
        """Record the next step (409 if it is not the next one, or the cycle is closed)."""
        now = today(platform)

        def apply(cycle: BpmCycle, consent: Consent | None) -> BpmCycle:
            return bpm.record_step(
                cycle,
                data.kind,
                performed_on=data.performed_on,
                pharmacist=data.pharmacist or ctx.actor,
                notes=data.notes,
                treatments_changed=data.treatments_changed,
                today=now,
                consent=consent,
            )

        return self._change(
            store,
            audit,
            ctx,
            crypto,
            str(cycle_id),
            data.expected_version,
            "record_step",
            apply,
            now,
        )

    @post(
        "/{cycle_id:uuid}/abandon",
        guards=[requires("bpm:write")],
        sync_to_thread=True,
        status_code=200,
    )
    def abandon_cycle(
        self,
        cycle_id: FromPath[UUID],
        data: JSONBody[AbandonInput],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> BpmView:
        """Close an unfinished cycle with a reason."""
        now = today(platform)

        def apply(cycle: BpmCycle, _consent: Consent | None) -> BpmCycle:
            return bpm.abandon(cycle, closed_on=data.closed_on, reason=data.reason, today=now)

        return self._change(
            store, audit, ctx, crypto, str(cycle_id), data.expected_version, "abandon", apply, now
        )

    @post(
        "/{cycle_id:uuid}/follow-ups",
        guards=[requires("bpm:write")],
        sync_to_thread=True,
        status_code=200,
    )
    def plan_follow_up(
        self,
        cycle_id: FromPath[UUID],
        data: JSONBody[FollowUpInput],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> BpmView:
        """Plan a step for a date the pharmacist chose, or replan it (one plan per step).

        The convention sets no deadline per step, so the date is never computed here.
        """
        now = today(platform)

        def apply(cycle: BpmCycle, _consent: Consent | None) -> BpmCycle:
            return bpm.plan_follow_up(
                cycle, data.kind, due_on=data.due_on, planned_by=ctx.actor, today=now
            )

        return self._change(
            store, audit, ctx, crypto, str(cycle_id), data.expected_version, "plan", apply, now
        )

    @post(
        "/{cycle_id:uuid}/follow-ups/cancel",
        guards=[requires("bpm:write")],
        sync_to_thread=True,
        status_code=200,
    )
    def cancel_follow_up(
        self,
        cycle_id: FromPath[UUID],
        data: JSONBody[FollowUpCancel],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> BpmView:
        """Cancel the plan of a step not done yet (it stays in the cycle's history)."""
        now = today(platform)

        def apply(cycle: BpmCycle, _consent: Consent | None) -> BpmCycle:
            return bpm.cancel_follow_up(cycle, data.kind)

        return self._change(
            store,
            audit,
            ctx,
            crypto,
            str(cycle_id),
            data.expected_version,
            "cancel_plan",
            apply,
            now,
        )

    @get("/follow-ups", guards=[requires("bpm:read")], sync_to_thread=True)
    def due_follow_ups(
        self,
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
        within_days: Annotated[
            int,
            QueryParameter(ge=0, le=366, description="also list those due in the next N days"),
        ] = 7,
    ) -> list[DueFollowUp]:
        """Planned steps of open cycles not done yet, overdue or due within ``within_days``,
        earliest first: the counter's to-do list."""
        now = today(platform)
        horizon = now + timedelta(days=within_days)
        found: list[DueFollowUp] = []
        for item in repository.open_cycles(store):
            cycle = bpm.unseal_cycle(item.entity, crypto.cipher)
            found.extend(
                DueFollowUp(
                    cycle_id=item.entity_id,
                    patient_id=cycle.patient_id,
                    year=cycle.year,
                    follow_up=view,
                )
                for view in bpm.follow_up_views(cycle, now)
                if not view.done and view.due_on <= horizon
            )
        found.sort(key=lambda d: (d.follow_up.due_on, d.cycle_id, d.follow_up.kind))
        record(audit, ctx, "search", OBJECT_TYPE, sorted({d.cycle_id for d in found}))
        return found
