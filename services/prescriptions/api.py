"""HTTP API of prescriptions: create, read, replace, void, history, a patient's list.

Guarded by the patient scopes (a prescription is part of the patient's record) and audited,
reads included, before the answer leaves: ids and codes only.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from appliance.audit import AuditLog
from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import requires
from appliance.store import Store, VersionConflictError, Versioned
from services.analysis import Drug, find_redundancies
from services.analysis import Finding as RedundancyFinding
from services.patients import (
    Eligibility,
    EligibilityRule,
    SubstancePeriod,
    bpm_eligibility,
    bpm_enrolled,
    dispensing_entries,
    patient_birth_date,
    patients_with_dispensings,
    rule_in_force,
)
from services.patients.api import invalid, record, today
from services.patients.eligibility import age_on
from services.prescriptions import logic
from services.prescriptions import store as repository
from services.prescriptions.models import (
    FieldError,
    Prescription,
    PrescriptionUpdate,
    PrescriptionView,
    Product,
    StoredPrescription,
)

OBJECT_TYPE = "prescription"
READ = "patients:read"
WRITE = "patients:write"


def line_products(store: Store, prescription: Prescription) -> dict[int, Product | None]:
    """The catalog's product for each line that names a CIS or CIP13."""
    return {
        index: repository.product_for(store, line.cis, line.cip13)
        for index, line in enumerate(prescription.lines)
        if line.cis or line.cip13
    }


def view(store: Store, item: Versioned[StoredPrescription], as_of: date) -> PrescriptionView:
    prescription = item.entity.prescription
    birth = patient_birth_date(store, prescription.patient_id)
    age = age_on(birth, as_of) if birth else None
    report = logic.validate(prescription, line_products(store, prescription), as_of, age=age)
    return PrescriptionView(
        **msgspec.structs.asdict(prescription),
        id=item.entity_id,
        version=item.version,
        recorded_at=item.recorded_at,
        recorded_by=item.recorded_by,
        deleted=item.deleted,
        treatment_end=logic.treatment_end(prescription),
        validation=report,
    )


def checked(store: Store, body: Prescription, day: date) -> Prescription:
    """Normalised and structurally valid (400 listing every problem otherwise)."""
    prescription = logic.normalise(body)
    errors = logic.mandatory_errors(prescription, day)
    birth = patient_birth_date(store, prescription.patient_id)
    if birth is None:
        errors.append(FieldError("patient_id", "no such patient"))
    elif prescription.prescribed_on < birth:
        errors.append(FieldError("prescribed_on", "must not be before the birth date"))
    if errors:
        invalid(errors)
    return prescription


def store_new(
    store: Store, prescription: Prescription, actor: str
) -> Versioned[StoredPrescription]:
    stored = StoredPrescription(prescription_id=str(uuid.uuid4()), prescription=prescription)
    return repository.save(store, stored, actor=actor, expected_version=0)


def _fields(body: PrescriptionUpdate) -> Prescription:
    fields = msgspec.structs.asdict(body)
    fields.pop("expected_version")
    return Prescription(**fields)


class PrescriptionController(Controller):
    path = "/api/v1/prescriptions"
    tags = ["prescriptions"]

    def _existing(
        self, st: Store, audit: AuditLog, ctx: RequestContext, prescription_id: str, action: str
    ) -> Versioned[StoredPrescription]:
        item = repository.get(st, prescription_id)
        if item is None:
            record(audit, ctx, action, OBJECT_TYPE, [prescription_id], outcome="not_found")
            raise Problem(404, "not-found", f"no prescription '{prescription_id}'")
        return item

    @post("/", guards=[requires(WRITE)], sync_to_thread=True)
    def create_prescription(
        self,
        data: JSONBody[Prescription],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> PrescriptionView:
        """Record a prescription (version 1) and return it with its validation report."""
        day = today(platform)
        prescription = checked(store, data, day)
        saved = store_new(store, prescription, ctx.actor)
        record(audit, ctx, "create", OBJECT_TYPE, [saved.entity_id])
        return view(store, saved, day)

    @get("/{prescription_id:uuid}", guards=[requires(READ)], sync_to_thread=True)
    def get_prescription(
        self,
        prescription_id: FromPath[UUID],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> PrescriptionView:
        """The latest version, validated as of today."""
        item = self._existing(store, audit, ctx, str(prescription_id), "read")
        result = view(store, item, today(platform))
        record(audit, ctx, "read", OBJECT_TYPE, [item.entity_id])
        return result

    @put("/{prescription_id:uuid}", guards=[requires(WRITE)], sync_to_thread=True)
    def update_prescription(
        self,
        prescription_id: FromPath[UUID],
        data: JSONBody[PrescriptionUpdate],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> PrescriptionView:
        """Replace the prescription, based on ``expected_version`` (409 when stale)."""
        item = self._existing(store, audit, ctx, str(prescription_id), "update")
        day = today(platform)
        prescription = checked(store, _fields(data), day)
        if item.deleted:
            raise Problem(409, "prescription-voided", "this prescription was voided")
        if prescription.patient_id != item.entity.prescription.patient_id:
            invalid([FieldError("patient_id", "a prescription cannot move to another patient")])
        try:
            saved = repository.save(
                store,
                StoredPrescription(prescription_id=item.entity_id, prescription=prescription),
                actor=ctx.actor,
                expected_version=data.expected_version,
            )
        except VersionConflictError:
            record(audit, ctx, "update", OBJECT_TYPE, [item.entity_id], outcome="conflict")
            raise
        record(audit, ctx, "update", OBJECT_TYPE, [item.entity_id])
        return view(store, saved, day)

    @delete(
        "/{prescription_id:uuid}",
        guards=[requires(WRITE)],
        sync_to_thread=True,
        status_code=200,
    )
    def void_prescription(
        self,
        prescription_id: FromPath[UUID],
        expected_version: Annotated[int, Parameter(ge=1)],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> PrescriptionView:
        """Void a prescription entered by mistake; it stays in its history."""
        item = self._existing(store, audit, ctx, str(prescription_id), "void")
        try:
            saved = repository.save(
                store,
                item.entity,
                actor=ctx.actor,
                expected_version=expected_version,
                voided=True,
            )
        except VersionConflictError:
            record(audit, ctx, "void", OBJECT_TYPE, [item.entity_id], outcome="conflict")
            raise
        record(audit, ctx, "void", OBJECT_TYPE, [item.entity_id])
        return view(store, saved, today(platform))

    @get("/{prescription_id:uuid}/history", guards=[requires(READ)], sync_to_thread=True)
    def prescription_history(
        self,
        prescription_id: FromPath[UUID],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> list[PrescriptionView]:
        """Every version, oldest first, with who recorded it and when."""
        item = self._existing(store, audit, ctx, str(prescription_id), "history")
        day = today(platform)
        views = [view(store, v, day) for v in repository.history(store, item.entity_id)]
        record(audit, ctx, "history", OBJECT_TYPE, [item.entity_id])
        return views


class PatientPrescriptionController(Controller):
    path = "/api/v1/patients/{patient_id:uuid}/prescriptions"
    tags = ["prescriptions"]

    @get("/", guards=[requires(READ)], sync_to_thread=True)
    def patient_prescriptions(
        self,
        patient_id: FromPath[UUID],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        active_only: FromQuery[bool] = False,
    ) -> list[PrescriptionView]:
        """A patient's prescriptions, most recent first (``active_only``: treatment not over)."""
        pid = str(patient_id)
        if patient_birth_date(store, pid) is None:
            record(audit, ctx, "read_prescriptions", "patient", [pid], outcome="not_found")
            raise Problem(404, "not-found", f"no patient '{pid}'")
        day = today(platform)
        items = [
            item
            for item in repository.of_patient(store, pid)
            if not active_only or logic.is_active(item.entity.prescription, day)
        ]
        with audit.store.write():
            audit.record(ctx.audit_event("read_prescriptions", "patient", pid, purpose="care"))
            for item in items:
                audit.record(ctx.audit_event("read", OBJECT_TYPE, item.entity_id, purpose="care"))
        return [view(store, item, day) for item in items]


# --------------------------------------------------------------------------- BPM eligibility


def substance_periods(
    store: Store, patient_id: str, rule: EligibilityRule
) -> tuple[list[SubstancePeriod], int]:
    """Every substance period of a patient, from prescriptions (planned: line duration times
    renewals, else the prescription's validity) and dispensing lines (boxes times the
    rule's days per box), through the catalog; and how many lines map to no substance."""
    entries: list[tuple[str, str | None, str | None, date, date]] = []
    for item in repository.of_patient(store, patient_id):
        prescription = item.entity.prescription
        for index, line in enumerate(prescription.lines):
            end = logic.line_end(
                prescription.prescribed_on, line.posology, prescription.renewals
            ) or logic.treatment_end(prescription)
            source = f"prescription:{item.entity_id}#{index}"
            entries.append((source, line.cis, line.cip13, prescription.prescribed_on, end))
    days = rule.assumptions.dispensing_days_per_box
    for dispensing_id, entry in dispensing_entries(store, patient_id):
        end = entry.dispensed_on + timedelta(days=days * entry.quantity - 1)
        source = f"dispensing:{dispensing_id}"
        entries.append((source, entry.cis, entry.cip13, entry.dispensed_on, end))
    cis_of = {
        (cis, cip13): cis or (repository.cis_for_cip13(store, cip13) if cip13 else None)
        for _, cis, cip13, _, _ in entries
    }
    catalog = repository.products(store, [c for c in cis_of.values() if c])
    periods: list[SubstancePeriod] = []
    unmapped = 0
    for source, cis, cip13, start, end in entries:
        key = cis_of[(cis, cip13)]
        product = catalog.get(key) if key else None
        if product is None or not product.substances:
            unmapped += 1
            continue
        periods.extend(
            SubstancePeriod(substance=code, name=name, start=start, end=end, source=source)
            for code, name in product.substances
        )
    return periods, unmapped


class EligibilityView(msgspec.Struct, frozen=True, kw_only=True):
    patient_id: str
    eligibility: Eligibility
    unmapped_lines: int
    """Prescription or dispensing lines the catalog maps to no substance (not counted)."""
    enrolled: bool


def assess(store: Store, patient_id: str, birth: date, as_of: date) -> EligibilityView:
    rule = rule_in_force(as_of)
    periods, unmapped = substance_periods(store, patient_id, rule)
    return EligibilityView(
        patient_id=patient_id,
        eligibility=bpm_eligibility(birth, periods, as_of, rule),
        unmapped_lines=unmapped,
        enrolled=bpm_enrolled(store, patient_id),
    )


class EligibilityController(Controller):
    path = "/api/v1"
    tags = ["bpm"]

    @get("/bpm/eligible", guards=[requires("bpm:read")], sync_to_thread=True)
    def eligible_patients(
        self,
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
    ) -> list[EligibilityView]:
        """Eligible patients not yet enrolled (no BPM cycle in progress or completed), most
        substances first. Each patient returned is audited."""
        day = today(platform)
        rule = rule_in_force(day)
        candidates = sorted(
            set(repository.patients_with_prescriptions(store))
            | set(patients_with_dispensings(store))
        )
        found: list[EligibilityView] = []
        for patient_id in candidates:
            birth = patient_birth_date(store, patient_id)
            if birth is None or age_on(birth, day) < rule.min_age_years:
                continue
            if bpm_enrolled(store, patient_id):
                continue
            assessed = assess(store, patient_id, birth, day)
            if assessed.eligibility.eligible:
                found.append(assessed)
        found.sort(key=lambda v: (-v.eligibility.substance_count, v.patient_id))
        found = found[:limit]
        record(audit, ctx, "bpm_eligibility", "patient", [v.patient_id for v in found])
        return found

    @get(
        "/patients/{patient_id:uuid}/bpm-eligibility",
        guards=[requires("bpm:read")],
        sync_to_thread=True,
    )
    def patient_eligibility(
        self,
        patient_id: FromPath[UUID],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        as_of: FromQuery[date | None] = None,
    ) -> EligibilityView:
        """Whether this patient is eligible (today, or ``as_of``), substance by substance."""
        pid = str(patient_id)
        birth = patient_birth_date(store, pid)
        if birth is None:
            record(audit, ctx, "bpm_eligibility", "patient", [pid], outcome="not_found")
            raise Problem(404, "not-found", f"no patient '{pid}'")
        result = assess(store, pid, birth, as_of or today(platform))
        record(audit, ctx, "bpm_eligibility", "patient", [pid])
        return result


class ActiveLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line of an active prescription, with the catalog's substances and ATC code."""

    prescription_id: str
    line: int
    label: str
    cis: str | None
    atc: str | None
    substances: tuple[tuple[str, str], ...]
    start: date
    end: date


def active_lines(store: Store, patient_id: str, as_of: date) -> list[ActiveLine]:
    """Every line of the patient's prescriptions active on ``as_of``."""
    found: list[ActiveLine] = []
    for item in repository.of_patient(store, patient_id):
        prescription = item.entity.prescription
        if not logic.is_active(prescription, as_of):
            continue
        products = line_products(store, prescription)
        for index, line in enumerate(prescription.lines):
            product = products.get(index)
            end = logic.line_end(prescription.prescribed_on, line.posology, prescription.renewals)
            found.append(
                ActiveLine(
                    prescription_id=item.entity_id,
                    line=index,
                    label=product.name if product else (line.label or line.cis or line.cip13 or ""),
                    cis=product.cis if product else line.cis,
                    atc=product.atc if product else None,
                    substances=product.substances if product else (),
                    start=prescription.prescribed_on,
                    end=end or logic.treatment_end(prescription),
                )
            )
    return found


class RedundancyView(msgspec.Struct, frozen=True, kw_only=True):
    patient_id: str
    as_of: date
    medications: list[ActiveLine]
    findings: list[RedundancyFinding]
    """From ``services.analysis.find_redundancies``: the one implementation of the rule."""


class RedundancyController(Controller):
    path = "/api/v1/patients/{patient_id:uuid}/prescriptions/redundancies"
    tags = ["prescriptions"]

    @get("/", guards=[requires(READ)], sync_to_thread=True)
    def redundancies(
        self,
        patient_id: FromPath[UUID],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> RedundancyView:
        """Therapeutic redundancies within and across the patient's active prescriptions
        (same substance from two products, same ATC class), by the analysis engine's rule."""
        pid = str(patient_id)
        if patient_birth_date(store, pid) is None:
            record(audit, ctx, "read_redundancies", "patient", [pid], outcome="not_found")
            raise Problem(404, "not-found", f"no patient '{pid}'")
        day = today(platform)
        lines = active_lines(store, pid, day)
        drugs = [
            Drug(
                label=f"{line.label} (ordonnance {line.prescription_id[:8]}, "
                f"ligne {line.line + 1})",
                atc=line.atc,
                cis=line.cis,
                start=line.start,
            )
            for line in lines
        ]
        findings = find_redundancies(drugs)
        record(audit, ctx, "read_redundancies", "patient", [pid])
        return RedundancyView(patient_id=pid, as_of=day, medications=lines, findings=findings)
