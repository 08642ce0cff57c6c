"""FHIR R4 over HTTP: ``POST /api/v1/fhir`` imports a Bundle, ``GET
/api/v1/patients/{id}/$everything`` exports one. Audited: ids only."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, RawBody

from appliance.audit import AuditLog
from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import requires
from appliance.store import Store
from services.fhir.models import ImportReport
from services.fhir.store import BundleError, everything, import_bundle
from services.patients.api import CONTROLLER_OPTIONS, record, today
from services.patients.logic import PatientCrypto

FHIR_JSON = "application/fhir+json"


def audit_import(audit: AuditLog, ctx: RequestContext, report: ImportReport) -> None:
    """One entry per stored target (patient, prescription...), and one for the bundle."""
    targets = sorted(
        {
            e.target
            for e in report.entries
            if e.target and e.outcome in ("created", "updated", "unchanged")
        }
    )
    with audit.store.write():
        audit.record(
            ctx.audit_event(
                "fhir_import",
                "fhir_bundle",
                report.bundle_type,
                purpose="care",
                outcome="success"
                if report.rejected == 0
                else "partial"
                if report.stored
                else "rejected",
            )
        )
        for target in targets:
            object_type, _, object_id = target.partition("/")
            audit.record(ctx.audit_event("fhir_import", object_type, object_id, purpose="care"))


class FhirController(Controller):
    path = "/api/v1"
    tags = ["fhir"]
    dependencies = CONTROLLER_OPTIONS["dependencies"]
    exception_handlers = CONTROLLER_OPTIONS["exception_handlers"]

    @post("/fhir", guards=[requires("patients:write")], sync_to_thread=True, status_code=200)
    def import_fhir(
        self,
        request: Request[Any, Any, Any],
        body: RawBody,
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[PatientCrypto],
    ) -> ImportReport:
        """Import a FHIR R4 Bundle (``collection`` or ``batch``: each valid entry is stored;
        ``transaction``: all or nothing). The answer reports every entry."""
        try:
            bundle = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise Problem(400, "fhir-not-json", f"the body is not JSON: {exc}") from exc
        try:
            report = import_bundle(store, crypto, bundle, actor=ctx.actor, today=today(platform))
        except BundleError as exc:
            raise Problem(400, "fhir-bundle", str(exc)) from exc
        audit_import(audit, ctx, report)
        everything_rejected = report.rejected == len(report.entries) > 0
        if report.rejected and (report.bundle_type == "transaction" or everything_rejected):
            raise Problem(
                422,
                "fhir-rejected",
                f"{report.rejected} entr{'y' if report.rejected == 1 else 'ies'} rejected; "
                + ("nothing stored" if report.bundle_type == "transaction" else "see entries"),
                extra={"report": msgspec.to_builtins(report)},
            )
        return report

    @get(
        "/patients/{patient_id:uuid}/$everything",
        guards=[requires("patients:read")],
        sync_to_thread=True,
    )
    def export_fhir(
        self,
        patient_id: FromPath[UUID],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[PatientCrypto],
    ) -> Response[bytes]:
        """The patient's record, prescriptions and dispensings as a FHIR R4 Bundle."""
        pid = str(patient_id)
        bundle = everything(store, crypto, pid, today=today(platform))
        if bundle is None:
            record(audit, ctx, "fhir_export", "patient", [pid], outcome="not_found")
            raise Problem(404, "not-found", f"no patient '{pid}'")
        record(audit, ctx, "fhir_export", "patient", [pid])
        return Response(msgspec.json.encode(bundle), media_type=FHIR_JSON)
