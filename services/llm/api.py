"""HTTP API of LLM drafting: queue a draft, poll or stream its job, read traces, manage models.

No model runs inside a request: ``POST /generate`` stores a job and queues its id for the
worker (huey), answering 202 at once; ``GET /jobs/{id}`` polls it and ``GET
/jobs/{id}/events`` streams its progress as server-sent events. A generation can take
seconds to minutes on the appliance's CPU, longer than a counter terminal should hold a
connection, and a fuzzer or a retrying client must never start a model.

Every generation is stored with its traceability record and audited with ids only (the text
and the patient's name never reach the audit log).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter
from litestar.response import ServerSentEvent

from appliance.audit import AuditLog
from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import requires
from appliance.store import Store
from services.llm import store as repository
from services.llm.models import (
    MODEL_NAME_PATTERN,
    GenerateRequest,
    GenerateResponse,
    GenerationRecord,
    JobView,
    LlmJob,
    ModelView,
    RegisterModelRequest,
)
from services.llm.runtime import LlmRuntime, NoModelError
from services.llm.tasks import JobQueue, open_queue, run_generation

__all__ = ["SCOPE_GENERATE", "SCOPE_READ", "LlmController", "run_generation"]

SCOPE_GENERATE = "llm:generate"
SCOPE_READ = "llm:read"
SCOPE_MODELS = "admin:models"
OBJECT_TYPE = "llm_generation"
JOB_OBJECT = "llm_job"
MODEL_OBJECT = "llm_model"
EVENTS_MAX_S = 300.0
"""How long one events stream follows a job before it says ``timeout`` (the client polls
or reconnects): a worker that is down must not hold connections forever."""
EVENTS_POLL_S = 0.25

JobId = Annotated[str, Parameter(pattern=r"^job-[0-9a-f]{32}$", min_length=36, max_length=36)]


def provide_runtime(state: State, platform: NamedDependency[Platform]) -> LlmRuntime:
    """The process's runtime (registry views only: this process never loads weights)."""
    runtime: LlmRuntime | None = state.get("llm_runtime")
    if runtime is None:
        runtime = LlmRuntime(platform.settings)
        state["llm_runtime"] = runtime
    return runtime


def provide_queue(state: State, platform: NamedDependency[Platform]) -> JobQueue:
    queue: JobQueue | None = state.get("llm_queue")
    if queue is None:
        queue = open_queue(platform)
        state["llm_queue"] = queue
    return queue


def generation_response(record: GenerationRecord) -> GenerateResponse:
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


def job_view(store: Store, runtime: LlmRuntime | None, job: LlmJob) -> JobView:
    generation = None
    if job.generation_id is not None:
        found = repository.get(store, job.generation_id)
        generation = generation_response(found.entity) if found else None
    model = None
    if job.model_name is not None and runtime is not None:
        model = next((v for v in runtime.views() if v.name == job.model_name), None)
    return JobView(
        id=job.id,
        kind=job.kind,
        status=job.status,
        generation=generation,
        model=model,
        error=job.error,
    )


def new_job(ctx: RequestContext, **fields: Any) -> LlmJob:
    return LlmJob(
        id=f"job-{uuid.uuid4().hex}",
        status="queued",
        actor=ctx.actor,
        role=ctx.role,
        client_addr=ctx.client_addr,
        request_id=ctx.request_id,
        created_at=datetime.now(UTC),
        **fields,
    )


def _models_file(platform: Platform, raw: str) -> Path:
    """The weights path of a registration, refused unless inside the models folder."""
    root = platform.settings.llm_models_path.resolve()
    try:
        path = (root / raw).resolve()
    except (OSError, ValueError) as exc:
        raise Problem(400, "bad-path", "the model path cannot be read") from exc
    if path == root or not path.is_relative_to(root):
        raise Problem(400, "outside-models-folder", f"the weights must be copied into {root} first")
    if not path.exists():
        raise Problem(404, "not-found", f"no file or folder '{raw}' in the models folder")
    return path


def _load_job(store: Store, job_id: str, ctx: RequestContext, audit: AuditLog) -> LlmJob:
    found = repository.get_job(store, job_id)
    if found is None:
        raise Problem(404, "not-found", f"no job '{job_id}'")
    job = found.entity
    if job.kind == "generate":
        audit.record(ctx.audit_event("read", JOB_OBJECT, job.id, purpose="care"))
    return job


class LlmController(Controller):
    path = "/api/v1/llm"
    tags = ["llm"]
    dependencies = {
        "runtime": Provide(provide_runtime, sync_to_thread=False),
        "queue": Provide(provide_queue, sync_to_thread=False),
    }

    @post("/generate", guards=[requires(SCOPE_GENERATE)], sync_to_thread=True, status_code=202)
    def generate(
        self,
        data: JSONBody[GenerateRequest],
        runtime: NamedDependency[LlmRuntime],
        queue: NamedDependency[JobQueue],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> Response[JobView]:
        """Queue a draft for a task; poll ``GET /jobs/{id}`` (or follow its events).

        The finished job carries the generation: ``valid`` is false (and ``draft`` null)
        when no answer passed validation; the record (models, hashes, checks, timings) is
        stored. 409 when no model is registered with its weights present.
        """
        try:
            runtime.manifests_for(data)
        except NoModelError as exc:
            raise Problem(409, "no-model", str(exc)) from exc
        job = new_job(ctx, kind="generate", generate=data)
        repository.create_job(store, job)
        audit.record(ctx.audit_event("queue", JOB_OBJECT, job.id, purpose="care"))
        queue.submit(job.id)
        return Response(
            job_view(store, None, job),
            status_code=202,
            headers={"Location": f"/api/v1/llm/jobs/{job.id}"},
        )

    @get("/jobs/{job_id:str}", guards=[requires(SCOPE_READ)], sync_to_thread=True)
    def get_job(
        self,
        job_id: JobId,
        runtime: NamedDependency[LlmRuntime],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> JobView:
        """A queued job: ``queued``, ``running``, then ``done`` (with its result) or
        ``failed`` (with the reason)."""
        return job_view(store, runtime, _load_job(store, job_id, ctx, audit))

    @get("/jobs/{job_id:str}/events", guards=[requires(SCOPE_READ)], sync_to_thread=True)
    def job_events(
        self,
        job_id: JobId,
        runtime: NamedDependency[LlmRuntime],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> ServerSentEvent:
        """The job's progress as server-sent events: ``status`` at each change; while it
        runs, ``attempt`` (the model) and ``token`` (the text sampled since the last event:
        a preview, not validated); then ``done`` with the job view as JSON, whose draft is
        the validated one (or ``timeout`` after five minutes)."""
        job = _load_job(store, job_id, ctx, audit)

        async def events() -> AsyncIterator[dict[str, str]]:
            current = job
            last: str | None = None
            attempt, sent = 0, 0
            deadline = time.monotonic() + EVENTS_MAX_S
            while True:
                if current.status != last:
                    last = current.status
                    yield {"event": "status", "data": current.status}
                progress = repository.get_progress(store, job_id)
                if current.status == "running" and progress is not None:
                    number, model, text = progress
                    if number != attempt:
                        attempt, sent = number, 0
                        yield {"event": "attempt", "data": model}
                    if len(text) > sent:
                        yield {"event": "token", "data": text[sent:]}
                        sent = len(text)
                if current.status in {"done", "failed"}:
                    view = job_view(store, runtime, current)
                    yield {"event": "done", "data": msgspec.json.encode(view).decode()}
                    return
                if time.monotonic() > deadline:
                    yield {"event": "timeout", "data": current.status}
                    return
                await asyncio.sleep(EVENTS_POLL_S)
                found = repository.get_job(store, job_id)
                current = found.entity if found else current

        return ServerSentEvent(events())

    @get("/generations/{generation_id:str}", guards=[requires(SCOPE_READ)], sync_to_thread=True)
    def get_generation(
        self,
        generation_id: Annotated[str, Parameter(pattern=r"^gen-[0-9a-f]{32}$", max_length=36)],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> GenerationRecord:
        """The full traceability record of one generation."""
        item = repository.get(store, generation_id)
        if item is None:
            raise Problem(404, "not-found", f"no generation '{generation_id}'")
        audit.record(ctx.audit_event("read", OBJECT_TYPE, generation_id, purpose="care"))
        return item.entity

    @get("/models", guards=[requires(SCOPE_READ)], sync_to_thread=True)
    def list_models(self, runtime: NamedDependency[LlmRuntime]) -> list[ModelView]:
        """Registered models, whether their weights are present and whether loaded (by
        this process; the worker loads them for generation)."""
        return runtime.views()

    @post("/models", guards=[requires(SCOPE_MODELS)], sync_to_thread=True, status_code=202)
    def register_model(
        self,
        data: JSONBody[RegisterModelRequest],
        platform: NamedDependency[Platform],
        queue: NamedDependency[JobQueue],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> Response[JobView]:
        """Register weights copied into the models folder; the worker computes (and checks)
        their sha256, which can take minutes for a 7B model. Poll ``GET /jobs/{id}``."""
        _models_file(platform, data.path)
        job = new_job(ctx, kind="register_model", register=data)
        repository.create_job(store, job)
        audit.record(ctx.audit_event("queue", JOB_OBJECT, job.id, purpose="admin"))
        queue.submit(job.id)
        return Response(
            job_view(store, None, job),
            status_code=202,
            headers={"Location": f"/api/v1/llm/jobs/{job.id}"},
        )

    @delete("/models/{name:str}", guards=[requires(SCOPE_MODELS)], sync_to_thread=True)
    def unregister_model(
        self,
        name: Annotated[str, Parameter(pattern=MODEL_NAME_PATTERN)],
        runtime: NamedDependency[LlmRuntime],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> None:
        """Forget a registered model (its manifest; the weights stay on disk). The
        embedded default cannot be removed."""
        if not runtime.registry.remove(name):
            raise Problem(404, "not-found", f"no registered model '{name}' (or it is embedded)")
        audit.record(ctx.audit_event("delete", MODEL_OBJECT, name, purpose="admin"))
