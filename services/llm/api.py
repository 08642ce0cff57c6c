"""HTTP API of LLM drafting: generate a validated draft, stream tokens, list models.

Every generation is stored with its traceability record and audited with its id only (the
text and the patient's name never reach the audit log).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter
from litestar.response import ServerSentEvent

from appliance.audit import AuditLog
from appliance.audit.models import validate_event
from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import requires
from appliance.store import Store
from services.llm import store as repository
from services.llm.models import GenerateRequest, GenerateResponse, GenerationRecord, ModelView
from services.llm.runtime import LlmRuntime, NoModelError

SCOPE_GENERATE = "bpm:write"
"""Drafting is BPM work; switch to ``llm:generate`` once the role table defines it."""
SCOPE_READ = "bpm:read"
OBJECT_TYPE = "llm_generation"


def provide_runtime(state: State, platform: NamedDependency[Platform]) -> LlmRuntime:
    runtime: LlmRuntime | None = state.get("llm_runtime")
    if runtime is None:
        runtime = LlmRuntime(platform.settings)
        state["llm_runtime"] = runtime
    return runtime


def run_generation(
    runtime: LlmRuntime,
    store: Store,
    audit: AuditLog,
    ctx: RequestContext,
    request: GenerateRequest,
) -> GenerationRecord:
    """Generate, store the traceability record, audit its id (REST and gRPC share this)."""
    validate_event(ctx.audit_event("generate", OBJECT_TYPE, "gen-0", purpose="care"))
    record = runtime.generate(request, actor=ctx.actor)
    repository.save(store, record, actor=ctx.actor)
    audit.record(
        ctx.audit_event(
            "generate",
            OBJECT_TYPE,
            record.id,
            purpose="care",
            outcome="success" if record.valid else "rejected",
        )
    )
    return record


def _response(record: GenerationRecord) -> GenerateResponse:
    last = record.attempts[-1].checks if record.attempts else []
    return GenerateResponse(
        id=record.id,
        task=record.task,
        strategy=record.strategy,
        valid=record.valid,
        draft=record.draft,
        checks=[c for a in record.attempts if a.valid for c in a.checks][:5] or last,
        vote=record.vote,
        models=sorted({a.model for a in record.attempts}),
        template_version=record.template_version,
        latency_ms=record.latency_ms,
    )


class LlmController(Controller):
    path = "/api/v1/llm"
    tags = ["llm"]
    dependencies = {"runtime": Provide(provide_runtime, sync_to_thread=False)}

    @post("/generate", guards=[requires(SCOPE_GENERATE)], sync_to_thread=True, status_code=200)
    def generate(
        self,
        data: JSONBody[GenerateRequest],
        runtime: NamedDependency[LlmRuntime],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> GenerateResponse:
        """Draft a text for a task; ``valid`` is false (and ``draft`` null) when no answer
        passed validation. The record (models, hashes, checks, timings) is stored."""
        try:
            record = run_generation(runtime, store, audit, ctx, data)
        except NoModelError as exc:
            raise Problem(409, "no-model", str(exc)) from exc
        return _response(record)

    @post(
        "/generate/stream",
        guards=[requires(SCOPE_GENERATE)],
        sync_to_thread=True,
        status_code=200,
    )
    def generate_stream(
        self,
        data: JSONBody[GenerateRequest],
        runtime: NamedDependency[LlmRuntime],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> ServerSentEvent:
        """Tokens of a single-model draft as server-sent events (``token``, then ``done``).
        Streamed text is a preview: only ``/generate`` returns a validated draft."""
        try:
            runtime.manifests_for(data)
        except NoModelError as exc:
            raise Problem(409, "no-model", str(exc)) from exc
        audit.record(ctx.audit_event("stream", OBJECT_TYPE, data.patient_id, purpose="care"))

        def events() -> Iterator[dict[str, Any]]:
            for piece in runtime.stream(data):
                yield {"event": "token", "data": piece}
            yield {"event": "done", "data": ""}

        return ServerSentEvent(events())

    @get("/generations/{generation_id:str}", guards=[requires(SCOPE_READ)], sync_to_thread=True)
    def get_generation(
        self,
        generation_id: Annotated[str, Parameter(pattern=r"^gen-[0-9a-f]{32}$", max_length=36)],
        store: NamedDependency[Store],
    ) -> GenerationRecord:
        """The full traceability record of one generation."""
        item = repository.get(store, generation_id)
        if item is None:
            raise Problem(404, "not-found", f"no generation '{generation_id}'")
        return item.entity

    @get("/models", guards=[requires(SCOPE_READ)], sync_to_thread=True)
    def list_models(self, runtime: NamedDependency[LlmRuntime]) -> list[ModelView]:
        """Registered models, whether their weights are present and whether loaded."""
        return runtime.views()
