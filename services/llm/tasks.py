"""The worker side of LLM drafting: the huey task that runs queued jobs, and the queue the
HTTP API submits job ids to.

The queue file is plain SQLite (see ``appliance.tasks``), so a message carries the job id
only; the request (patient context) stays in the encrypted store, in the job row.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.audit import AuditLog
from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.store import Store
from models.registry import RegistryError
from services.llm import store as repository
from services.llm.models import GenerateRequest, GenerationRecord, LlmJob
from services.llm.runtime import LlmRuntime, NoModelError, Progress

if TYPE_CHECKING:
    from huey import Huey

TASK_NAME = "llm.run_job"
OBJECT_TYPE = "llm_generation"
MODEL_OBJECT = "llm_model"
_log = logging.getLogger(__name__)


def catalog_runtime(platform: Platform) -> LlmRuntime:
    """A runtime whose grounding check also accepts the drugs the catalog in force knows."""
    from services.medications import names_a_drug

    store = platform.store
    return LlmRuntime(platform.settings, catalog=lambda word: names_a_drug(store, word))


class JobProgress:
    """Writes a running job's text to the store as it is sampled, at most every
    ``interval_s`` (one small upsert, not one per token), for the events stream."""

    def __init__(self, store: Store, job_id: str, interval_s: float = 0.25) -> None:
        self.store, self.job_id, self.interval_s = store, job_id, interval_s
        self.attempt, self.model, self.text, self._written = 0, "", "", 0.0

    def start(self, model: str) -> None:
        self.attempt += 1
        self.model, self.text = model, ""
        self._write()

    def piece(self, text: str) -> None:
        self.text += text
        if time.monotonic() - self._written >= self.interval_s:
            self._write()

    def _write(self) -> None:
        repository.set_progress(self.store, self.job_id, self.attempt, self.model, self.text)
        self._written = time.monotonic()


def run_generation(
    runtime: LlmRuntime,
    store: Store,
    audit: AuditLog,
    ctx: RequestContext,
    request: GenerateRequest,
    progress: Progress | None = None,
) -> GenerationRecord:
    """Generate, store the traceability record, audit its id (worker and gRPC share this)."""
    ctx.audit_event("generate", OBJECT_TYPE, "gen-0", purpose="care")  # validates ctx first
    record = runtime.generate(request, actor=ctx.actor, progress=progress)
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


def run_job(runtime: LlmRuntime, store: Store, audit: AuditLog, job_id: str) -> LlmJob | None:
    """Run one queued job to ``done`` or ``failed``; a job already taken is left alone
    (huey may deliver a message twice after a crash)."""
    found = repository.get_job(store, job_id)
    if found is None or found.entity.status != "queued":
        return None
    running = repository.update_job(store, found, status="running")
    job = running.entity
    ctx = RequestContext(
        actor=job.actor, role=job.role, client_addr=job.client_addr, request_id=job.request_id
    )
    try:
        if job.generate is not None:
            progress = JobProgress(store, job.id)
            try:
                record = run_generation(runtime, store, audit, ctx, job.generate, progress)
            finally:
                repository.clear_progress(store, job.id)
            return repository.update_job(
                store, running, status="done", generation_id=record.id
            ).entity
        if job.register is not None:
            spec = job.register
            manifest = runtime.registry.add(
                runtime_models_root(runtime) / spec.path,
                name=spec.name,
                backend=spec.backend,
                sha256=spec.sha256,
                context_length=spec.context_length,
                licence=spec.licence,
                intended_use=spec.intended_use,
            )
            audit.record(ctx.audit_event("register", MODEL_OBJECT, manifest.name, purpose="admin"))
            return repository.update_job(
                store, running, status="done", model_name=manifest.name
            ).entity
        error = "empty job"
    except (NoModelError, RegistryError) as exc:
        error = str(exc)[:500]
    except Exception as exc:  # the job must end 'failed', never stay 'running'
        _log.exception("llm job %s failed", job_id)
        error = f"internal error ({type(exc).__name__})"
    return repository.update_job(store, running, status="failed", error=error).entity


def runtime_models_root(runtime: LlmRuntime) -> Path:
    return runtime.registry.directory.resolve()


def job_task(huey: Huey, platform: Platform) -> Any:
    """Register the job task on this huey instance; returns the callable that enqueues."""
    runtimes: list[LlmRuntime] = []

    @huey.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def llm_run_job(job_id: str) -> None:
        if not runtimes:
            runtimes.append(catalog_runtime(platform))
        run_job(runtimes[0], platform.store, platform.audit, job_id)

    return llm_run_job


def register_tasks(huey: Huey, platform: Platform) -> None:
    """The worker's side (``hygie worker``): run the jobs the API queued."""
    job_task(huey, platform)


class JobQueue:
    """The API process's handle on the worker queue: it enqueues, never executes."""

    def __init__(self, huey: Huey, platform: Platform) -> None:
        self.huey = huey
        self._task = job_task(huey, platform)

    def submit(self, job_id: str) -> None:
        self._task(job_id)


def open_queue(platform: Platform) -> JobQueue:
    from appliance.tasks import create_huey

    return JobQueue(create_huey(platform.settings), platform)
