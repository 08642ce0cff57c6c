"""HTTP API of patient records: create, read, search, replace, history, dispensing lines,
pseudonyms and re-identification.

Every handler is guarded by a scope, and every access to a patient's data, reads included,
is written to the audit log before the answer leaves: who, which patient (by id), what
action, for which purpose. Names, NIR and notes never reach the audit log.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Annotated, Any, NoReturn
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ValidationException
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, PathParameter

from appliance.audit import AuditLog
from appliance.dependencies import RequestContext
from appliance.fieldcrypto import FieldCryptoError, load_field_keys
from appliance.keys import SecretError
from appliance.observability import get_logger
from appliance.platform import Platform
from appliance.problems import Problem, problem_response
from appliance.security import requires
from appliance.store import Store, VersionConflictError, Versioned
from services.patients import logic
from services.patients import store as repository
from services.patients.models import Dispensing as DispensingBody
from services.patients.models import (
    DispensingView,
    FieldError,
    Patient,
    PatientSummary,
    PatientUpdate,
    PatientView,
    PseudonymView,
    StoredDispensing,
    StoredPatient,
)

OBJECT_TYPE = "patient"
PURPOSE_CARE = "care"
PURPOSE_REIDENTIFICATION = "reidentification"
CRYPTO_STATE_KEY = "patients_crypto"
PSEUDONYM_PATTERN = r"^psn-[a-z2-7]{32}$"

_log = get_logger("hygie.patients")

# --------------------------------------------------------------------------- shared helpers


def provide_crypto(state: State, platform: NamedDependency[Platform]) -> logic.PatientCrypto:
    """Field keys derived once per app; a missing ``field.key`` makes patient routes 503."""
    cached = state.get(CRYPTO_STATE_KEY)
    if isinstance(cached, logic.PatientCrypto):
        return cached
    try:
        crypto = logic.PatientCrypto.from_keys(load_field_keys(platform.settings))
    except SecretError as exc:
        raise Problem(503, "field-key-unavailable", str(exc)) from exc
    state[CRYPTO_STATE_KEY] = crypto
    return crypto


def handle_field_crypto_error(
    request: Request[Any, Any, Any], exc: FieldCryptoError
) -> Response[Any]:
    # The message names key ids only, never a value; still, the client gets a generic one.
    _log.error("field_crypto_error", error_type=exc.__class__.__name__, detail=str(exc))
    return problem_response(
        request,
        503,
        "sealed fields cannot be opened with the configured field key (see the server log)",
        problem_type="field-key-mismatch",
    )


CONTROLLER_OPTIONS: dict[str, Any] = {
    "dependencies": {"crypto": Provide(provide_crypto, sync_to_thread=False)},
    "exception_handlers": {FieldCryptoError: handle_field_crypto_error},
}


def today(platform: Platform) -> date:
    """The pharmacy's local date (what "not in the future" means at the counter)."""
    return datetime.now(ZoneInfo(platform.settings.timezone)).date()


def invalid(errors: Sequence[FieldError], source: str = "body") -> NoReturn:
    """400 problem listing every broken rule, shaped like a body-decoding error."""
    raise ValidationException(
        detail="the request is not valid",
        extra=[{"key": e.key, "message": e.message, "source": source} for e in errors],
    )


def record(
    audit: AuditLog,
    ctx: RequestContext,
    action: str,
    object_type: str,
    object_ids: Iterable[str],
    *,
    purpose: str = PURPOSE_CARE,
    outcome: str = "success",
) -> None:
    """One audit entry per object, all in one audit transaction (fail closed: raises)."""
    ids = list(object_ids)
    with audit.store.write():
        for object_id in ids or [""]:
            audit.record(
                ctx.audit_event(
                    action,
                    object_type,
                    object_id,
                    purpose=purpose,
                    outcome=outcome if ids else "no_match",
                )
            )


# --------------------------------------------------------------------------- views


def _view(item: Versioned[StoredPatient], crypto: logic.PatientCrypto) -> PatientView:
    patient = logic.unseal_patient(item.entity, crypto)
    return PatientView(
        **msgspec.structs.asdict(patient),
        id=item.entity_id,
        version=item.version,
        recorded_at=item.recorded_at,
        recorded_by=item.recorded_by,
    )


def _summary(item: Versioned[StoredPatient]) -> PatientSummary:
    identity = item.entity.record.identity
    return PatientSummary(
        id=item.entity_id,
        version=item.version,
        birth_family_name=identity.birth_family_name,
        used_family_name=identity.used_family_name,
        given_names=identity.given_names,
        birth_date=identity.birth_date,
        sex=identity.sex,
        identity_status=identity.status,
    )


def _dispensing_view(item: Versioned[StoredDispensing]) -> DispensingView:
    return DispensingView(
        **msgspec.structs.asdict(item.entity.entry),
        id=item.entity_id,
        patient_id=item.entity.patient_id,
        version=item.version,
        recorded_at=item.recorded_at,
        recorded_by=item.recorded_by,
    )


def _patient_fields(body: PatientUpdate) -> Patient:
    fields = msgspec.structs.asdict(body)
    fields.pop("expected_version")
    return Patient(**fields)


def _search_row(patient: Patient) -> repository.SearchRow:
    identity = patient.identity
    return repository.SearchRow(
        names_folded=logic.names_folded(identity),
        family_folded=logic.fold(identity.used_family_name or identity.birth_family_name),
        birth_date=identity.birth_date,
    )


def existing_patient(st: Store, patient_id: str) -> Versioned[StoredPatient]:
    item = repository.get_patient(st, patient_id)
    if item is None or item.deleted:
        raise Problem(404, "not-found", f"no patient '{patient_id}'")
    return item


def _existing_audited(
    st: Store, audit: AuditLog, ctx: RequestContext, patient_id: str, action: str
) -> Versioned[StoredPatient]:
    try:
        return existing_patient(st, patient_id)
    except Problem:
        record(audit, ctx, action, OBJECT_TYPE, [patient_id], outcome="not_found")
        raise


# --------------------------------------------------------------------------- controllers

NirQuery = Annotated[str | None, Parameter(max_length=25, description="exact NIR")]
InsQuery = Annotated[str | None, Parameter(max_length=25, description="exact INS matricule")]


class PatientController(Controller):
    path = "/api/v1/patients"
    tags = ["patients"]
    dependencies = CONTROLLER_OPTIONS["dependencies"]
    exception_handlers = CONTROLLER_OPTIONS["exception_handlers"]

    def _save(
        self,
        st: Store,
        audit: AuditLog,
        ctx: RequestContext,
        crypto: logic.PatientCrypto,
        platform: Platform,
        patient_id: str,
        pseudonym: str,
        body: Patient,
        expected_version: int,
        action: str,
    ) -> PatientView:
        patient = logic.normalise_patient(body)
        errors = logic.validate_patient(patient, today(platform))
        if errors:
            invalid(errors)
        stored = logic.seal_patient(patient_id, pseudonym, patient, crypto)
        try:
            saved = repository.save_patient(
                st,
                stored,
                _search_row(patient),
                actor=ctx.actor,
                expected_version=expected_version,
            )
        except repository.DuplicateIdentifierError as exc:
            record(audit, ctx, action, OBJECT_TYPE, [patient_id], outcome="conflict")
            raise Problem(
                409,
                f"duplicate-{exc.field}",
                f"another patient record already has this {exc.field.upper()}",
                extra={"other_patient_id": exc.other_id},
            ) from exc
        except VersionConflictError:
            record(audit, ctx, action, OBJECT_TYPE, [patient_id], outcome="conflict")
            raise
        record(audit, ctx, action, OBJECT_TYPE, [patient_id])
        return _view(saved, crypto)

    @post("/", guards=[requires("patients:write")], sync_to_thread=True)
    def create_patient(
        self,
        data: JSONBody[Patient],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> PatientView:
        """Create a patient record (version 1); 409 if the NIR or INS is already known."""
        patient_id = str(uuid.uuid4())
        pseudonym = crypto.pseudonyms.pseudonym(patient_id)
        return self._save(
            store, audit, ctx, crypto, platform, patient_id, pseudonym, data, 0, "create"
        )

    @get("/", guards=[requires("patients:read")], sync_to_thread=True)
    def search_patients(
        self,
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
        q: Annotated[str | None, Parameter(max_length=100, description="name(s)")] = None,
        birth_date: FromQuery[date | None] = None,
        nir: NirQuery = None,
        ins: InsQuery = None,
        limit: Annotated[int, Parameter(ge=1, le=repository.MAX_RESULTS)] = 20,
    ) -> list[PatientSummary]:
        """Search by name (partial, accent- and case-insensitive), birth date, NIR or INS.

        Every criterion given must match. Each patient returned is audited as read.
        """
        errors = []
        for key, value in (("nir", nir), ("ins", ins)):
            if value is not None:
                problem = logic.nir_problem(logic.compact(value))
                if problem:
                    errors.append(FieldError(key, f"not a valid {key.upper()}: {problem}"))
        terms = logic.search_terms(q or "")
        if not errors and not (terms or birth_date or nir or ins):
            errors.append(FieldError("q", "give a name, a birth date, a NIR or an INS"))
        if errors:
            invalid(errors, source="query")
        found = repository.search_patients(
            store,
            terms=terms,
            birth_date=birth_date,
            nir_index=crypto.nir_index.compute(nir) if nir else None,
            ins_index=crypto.ins_index.compute(ins) if ins else None,
            limit=limit,
        )
        record(audit, ctx, "search", OBJECT_TYPE, [item.entity_id for item in found])
        return [_summary(item) for item in found]

    @get("/{patient_id:uuid}", guards=[requires("patients:read")], sync_to_thread=True)
    def get_patient(
        self,
        patient_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> PatientView:
        """The latest version of the record, NIR, INS and notes included."""
        item = _existing_audited(store, audit, ctx, str(patient_id), "read")
        view = _view(item, crypto)
        record(audit, ctx, "read", OBJECT_TYPE, [item.entity_id])
        return view

    @put("/{patient_id:uuid}", guards=[requires("patients:write")], sync_to_thread=True)
    def update_patient(
        self,
        patient_id: FromPath[UUID],
        data: JSONBody[PatientUpdate],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> PatientView:
        """Replace the whole record, based on ``expected_version`` (409 when stale)."""
        current = _existing_audited(store, audit, ctx, str(patient_id), "update")
        return self._save(
            store,
            audit,
            ctx,
            crypto,
            platform,
            current.entity_id,
            current.entity.pseudonym,
            _patient_fields(data),
            data.expected_version,
            "update",
        )

    @get("/{patient_id:uuid}/history", guards=[requires("patients:read")], sync_to_thread=True)
    def patient_history(
        self,
        patient_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[logic.PatientCrypto],
    ) -> list[PatientView]:
        """Every version, oldest first, with who wrote it and when."""
        item = _existing_audited(store, audit, ctx, str(patient_id), "history")
        views = [_view(v, crypto) for v in repository.patient_history(store, item.entity_id)]
        record(audit, ctx, "history", OBJECT_TYPE, [item.entity_id])
        return views

    @get("/{patient_id:uuid}/pseudonym", guards=[requires("patients:read")], sync_to_thread=True)
    def patient_pseudonym(
        self,
        patient_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> PseudonymView:
        """The patient's stable pseudonym, for analytics and the cloud side."""
        item = _existing_audited(store, audit, ctx, str(patient_id), "pseudonymise")
        record(audit, ctx, "pseudonymise", OBJECT_TYPE, [item.entity_id])
        return PseudonymView(patient_id=item.entity_id, pseudonym=item.entity.pseudonym)

    @post(
        "/{patient_id:uuid}/dispensings", guards=[requires("patients:write")], sync_to_thread=True
    )
    def add_dispensing(
        self,
        patient_id: FromPath[UUID],
        data: JSONBody[DispensingBody],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> DispensingView:
        """Add a dispensed line to the patient's history."""
        item = _existing_audited(store, audit, ctx, str(patient_id), "dispense")
        entry = logic.normalise_dispensing(data)
        errors = logic.validate_dispensing(entry, today(platform))
        if entry.dispensed_on < item.entity.record.identity.birth_date:
            errors.append(FieldError("dispensed_on", "must not be before the birth date"))
        if errors:
            invalid(errors)
        stored = StoredDispensing(
            dispensing_id=str(uuid.uuid4()), patient_id=item.entity_id, entry=entry
        )
        saved = repository.save_dispensing(store, stored, actor=ctx.actor, expected_version=0)
        record(audit, ctx, "dispense", OBJECT_TYPE, [item.entity_id])
        return _dispensing_view(saved)

    @get("/{patient_id:uuid}/dispensings", guards=[requires("patients:read")], sync_to_thread=True)
    def list_dispensings(
        self,
        patient_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        since: FromQuery[date | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=1_000_000)] = 0,
    ) -> list[DispensingView]:
        """Dispensing history, most recent first (voided lines left out)."""
        item = _existing_audited(store, audit, ctx, str(patient_id), "read_dispensings")
        lines = repository.dispensings_of(
            store, item.entity_id, since=since, limit=limit, offset=offset
        )
        record(audit, ctx, "read_dispensings", OBJECT_TYPE, [item.entity_id])
        return [_dispensing_view(line) for line in lines]

    @delete(
        "/{patient_id:uuid}/dispensings/{dispensing_id:uuid}",
        guards=[requires("patients:write")],
        sync_to_thread=True,
        status_code=200,
    )
    def void_dispensing(
        self,
        patient_id: FromPath[UUID],
        dispensing_id: FromPath[UUID],
        expected_version: Annotated[int, Parameter(ge=1)],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> DispensingView:
        """Void a line entered by mistake; it stays in the line's history."""
        item = _existing_audited(store, audit, ctx, str(patient_id), "void_dispensing")
        line = repository.get_dispensing(store, str(dispensing_id))
        if line is None or line.deleted or line.entity.patient_id != item.entity_id:
            record(
                audit, ctx, "void_dispensing", OBJECT_TYPE, [item.entity_id], outcome="not_found"
            )
            raise Problem(
                404, "not-found", f"no dispensing line '{dispensing_id}' for this patient"
            )
        try:
            saved = repository.save_dispensing(
                store, line.entity, actor=ctx.actor, expected_version=expected_version, voided=True
            )
        except VersionConflictError:
            record(audit, ctx, "void_dispensing", OBJECT_TYPE, [item.entity_id], outcome="conflict")
            raise
        record(audit, ctx, "void_dispensing", OBJECT_TYPE, [item.entity_id])
        return _dispensing_view(saved)


class PseudonymController(Controller):
    """Re-identification: pseudonym back to the patient id, on the appliance only."""

    path = "/api/v1/pseudonyms"
    tags = ["patients"]

    @get("/{pseudonym:str}", guards=[requires("patients:reidentify")], sync_to_thread=True)
    def reidentify(
        self,
        pseudonym: Annotated[str, PathParameter(pattern=PSEUDONYM_PATTERN, max_length=36)],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> PseudonymView:
        """The patient behind a pseudonym; audited with the purpose ``reidentification``."""
        patient_id = repository.patient_for_pseudonym(store, pseudonym)
        if patient_id is None:
            record(
                audit,
                ctx,
                "reidentify",
                OBJECT_TYPE,
                [pseudonym],
                purpose=PURPOSE_REIDENTIFICATION,
                outcome="not_found",
            )
            raise Problem(404, "not-found", "no patient has this pseudonym")
        record(
            audit, ctx, "reidentify", OBJECT_TYPE, [patient_id], purpose=PURPOSE_REIDENTIFICATION
        )
        return PseudonymView(patient_id=patient_id, pseudonym=pseudonym)
