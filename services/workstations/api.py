"""HTTP API of counter workstations; every write is audited."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from appliance.audit import AuditLog
from appliance.audit.models import validate_event
from appliance.dependencies import RequestContext
from appliance.problems import Problem
from appliance.security import requires
from appliance.store import Store, VersionConflictError, Versioned
from services.workstations import logic
from services.workstations import store as repository
from services.workstations.models import (
    Workstation,
    WorkstationCreate,
    WorkstationUpdate,
    WorkstationView,
)

CodeParam = Annotated[str, Parameter(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$(?!\n)", max_length=32)]
OBJECT_TYPE = "workstation"


def _view(item: Versioned[Workstation]) -> WorkstationView:
    entity = item.entity
    return WorkstationView(
        code=entity.code,
        label=entity.label,
        location=entity.location,
        card_reader=entity.card_reader,
        terminal=entity.terminal,
        active=entity.active,
        version=item.version,
        recorded_at=item.recorded_at,
        recorded_by=item.recorded_by,
    )


def _audit(audit: AuditLog, ctx: RequestContext, action: str, code: str, outcome: str) -> None:
    audit.record(ctx.audit_event(action, OBJECT_TYPE, code, purpose="admin", outcome=outcome))


def _save(
    st: Store,
    audit: NamedDependency[AuditLog],
    ctx: NamedDependency[RequestContext],
    workstation: Workstation,
    expected_version: int,
    action: str,
) -> WorkstationView:
    # refuse before storing what could not then be audited (the audit append comes after)
    validate_event(ctx.audit_event(action, OBJECT_TYPE, workstation.code, purpose="admin"))
    try:
        saved = repository.save(st, workstation, actor=ctx.actor, expected_version=expected_version)
    except repository.ReaderInUseError as exc:
        _audit(audit, ctx, action, workstation.code, "conflict")
        raise Problem(409, "reader-in-use", str(exc)) from exc
    except repository.TerminalInUseError as exc:
        _audit(audit, ctx, action, workstation.code, "conflict")
        raise Problem(409, "terminal-in-use", str(exc)) from exc
    except VersionConflictError:
        _audit(audit, ctx, action, workstation.code, "conflict")
        raise
    _audit(audit, ctx, action, workstation.code, "success")
    return _view(saved)


class WorkstationController(Controller):
    path = "/api/workstations"
    tags = ["workstations"]

    @get("/", guards=[requires("workstations:read")], sync_to_thread=True)
    def list_workstations(
        self,
        store: NamedDependency[Store],
        limit: Annotated[int, Parameter(ge=1, le=repository.MAX_WORKSTATIONS)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=1_000_000)] = 0,
    ) -> list[WorkstationView]:
        """Active and inactive workstations, latest version of each, by code."""
        return [_view(item) for item in repository.list_current(store, limit=limit, offset=offset)]

    @post("/", guards=[requires("workstations:write")], sync_to_thread=True)
    def create_workstation(
        self,
        data: JSONBody[WorkstationCreate],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> WorkstationView:
        """Declare a new counter workstation (409 if the code or the reader is taken)."""
        return _save(store, audit, ctx, logic.from_create(data), 0, "create")

    @get("/{code:str}", guards=[requires("workstations:read")], sync_to_thread=True)
    def get_workstation(self, code: CodeParam, store: NamedDependency[Store]) -> WorkstationView:
        return _view(_existing(store, code))

    @put("/{code:str}", guards=[requires("workstations:write")], sync_to_thread=True)
    def update_workstation(
        self,
        code: CodeParam,
        data: JSONBody[WorkstationUpdate],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> WorkstationView:
        """Replace a workstation's settings; a new version is written, the old one kept."""
        _existing(store, code)
        return _save(
            store, audit, ctx, logic.from_update(code, data), data.expected_version, "update"
        )

    @get("/{code:str}/history", guards=[requires("workstations:read")], sync_to_thread=True)
    def workstation_history(
        self, code: CodeParam, store: NamedDependency[Store]
    ) -> list[WorkstationView]:
        """Every version, oldest first, with who wrote it and when."""
        _existing(store, code)
        return [_view(item) for item in repository.history(store, code)]


def _existing(st: Store, code: str) -> Versioned[Workstation]:
    item = repository.get(st, code)
    if item is None:
        raise Problem(404, "not-found", f"no workstation '{code}'")
    return item
