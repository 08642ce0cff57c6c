"""The LLM runtime of one process: model registry, loaded-model cache, orchestrator calls.

It turns a :class:`GenerateRequest` into a validated draft and its traceability record;
the API stores the record and audits it (ids and hashes only).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from appliance.config import Settings
from appliance.keys import SecretError, read_secret
from appliance.resilience import Breakers, RetryPolicy
from models.loaders import GenerationParams, ModelCache
from models.registry import EMBEDDED_NAME, ModelManifest, ModelRegistry
from models.remote import RemoteEndpoint
from services.llm import logic
from services.llm.models import GenerateRequest, GenerationRecord, ModelView

REMOTE_TASKS = frozenset({"bpm_synthesis", "patient_advice"})
"""Tasks whose prompt holds only structured context; interview notes are free text that
may name people, so ``interview_summary`` never leaves the appliance."""


class Progress(Protocol):
    """Who watches a generation as it is sampled (the worker's job progress)."""

    def start(self, model: str) -> None:
        """A new attempt begins with this model (its text replaces the previous one)."""

    def piece(self, text: str) -> None:
        """A sampled piece of the current attempt."""


class NoModelError(Exception):
    """None of the requested models is registered with its weights present."""


class LlmRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: ModelRegistry | None = None,
        cache: ModelCache | None = None,
        catalog: Callable[[str], bool] | None = None,
        remote: RemoteEndpoint | None = None,
    ) -> None:
        self.registry = registry or ModelRegistry(settings.llm_models_path)
        self.cache = cache or ModelCache(
            capacity=settings.llm_cache_size,
            budget_bytes=settings.llm_memory_budget_mb * 1024 * 1024,
            threads=settings.llm_threads,
        )
        self.priority = [n.strip() for n in settings.llm_cascade.split(",") if n.strip()]
        self.catalog = catalog
        if remote is None and settings.llm_remote_enabled and settings.llm_remote_url:
            remote = RemoteEndpoint(
                settings.llm_remote_url,
                model=settings.llm_remote_model,
                retry=RetryPolicy.from_settings(settings),
                breakers=Breakers.from_settings(settings),
                timeout_s=settings.llm_remote_timeout_s,
                api_key=remote_api_key(settings),
            )
        self.remote = remote
        self.remote_name = f"remote:{settings.llm_remote_model}"
        self.retries = settings.llm_retries

    # -- models ----------------------------------------------------------------------------

    def manifests_for(self, request: GenerateRequest) -> list[ModelManifest]:
        """The requested models (or the configured priority list) that are present; when
        none of the priority list is, the embedded default."""
        if request.models:
            found = self.registry.available(request.models)
            if not found:
                raise NoModelError(f"none of {request.models} is available")
            return found
        found = self.registry.available(self.priority)
        if not found:
            found = self.registry.available([EMBEDDED_NAME])
        if not found:
            found = [m for m in self.registry.manifests() if _present(m)][:1]
        if not found:
            raise NoModelError("no model is registered (hygie models add PATH)")
        return found

    def views(self) -> list[ModelView]:
        loaded = set(self.cache.loaded())
        return [
            ModelView(
                name=m.name,
                backend=m.backend,
                sha256=m.sha256,
                context_length=m.context_length,
                licence=m.licence,
                intended_use=m.intended_use,
                present=_present(m),
                loaded=m.name in loaded,
            )
            for m in self.registry.manifests()
        ]

    # -- generation ------------------------------------------------------------------------

    def _caller(self, params: GenerationParams, progress: Progress | None = None) -> logic.Caller:
        def call(
            handle: logic.ModelHandle, messages: list[dict[str, str]], constrained: bool
        ) -> logic.Completion:
            schema = logic.DRAFT_SCHEMA if constrained else None
            if progress is not None:
                progress.start(handle.name)
            if handle.name == self.remote_name and self.remote is not None:
                raw = self.remote.generate(messages, params, schema)
            elif progress is not None:
                raw = self.cache.get(self.registry.get(handle.name)).generate(
                    messages, params, schema, on_piece=progress.piece
                )
            else:
                raw = self.cache.get(self.registry.get(handle.name)).generate(
                    messages, params, schema
                )
            return logic.Completion(
                text=raw.text,
                prompt_tokens=raw.prompt_tokens,
                completion_tokens=raw.completion_tokens,
                first_token_s=raw.first_token_s,
                total_s=raw.total_s,
            )

        return call

    def generate(
        self, request: GenerateRequest, *, actor: str, progress: Progress | None = None
    ) -> GenerationRecord:
        start = time.perf_counter()
        manifests = self.manifests_for(request)
        handles = [logic.ModelHandle(name=m.name, sha256=m.sha256) for m in manifests]
        strategy = request.strategy or logic.route(
            request.task, request.latency_budget_ms, len(handles)
        )
        params = GenerationParams(
            max_tokens=request.max_tokens, temperature=request.temperature, seed=request.seed
        )
        fallback = (
            logic.ModelHandle(name=self.remote_name, sha256="remote")
            if self.remote is not None and request.task in REMOTE_TASKS
            else None
        )
        orchestrator = logic.Orchestrator(
            call=self._caller(params, progress),
            lexicon=logic.lexicon_for(request, self.catalog),
            retries=self.retries,
            fallback=fallback,
        )
        outcome = orchestrator.run(strategy, handles, request)
        output = msgspec.json.encode(outcome.draft) if outcome.draft else b""
        return GenerationRecord(
            id=f"gen-{uuid.uuid4().hex}",
            task=request.task,
            patient_id=request.patient_id,
            strategy=outcome.strategy,
            template_version=logic.template_id(request.task),
            params=msgspec.to_builtins(params),
            input_sha256=logic.sha256_text(msgspec.json.encode(request)),
            output_sha256=logic.sha256_text(output),
            valid=outcome.draft is not None,
            draft=outcome.draft,
            attempts=outcome.attempts,
            vote=outcome.vote,
            fallback_used=outcome.fallback_used,
            latency_ms=round((time.perf_counter() - start) * 1000, 3),
            prompt_tokens=sum(a.prompt_tokens for a in outcome.attempts),
            completion_tokens=sum(a.completion_tokens for a in outcome.attempts),
            created_at=datetime.now(UTC),
            actor=actor,
        )

    def stream(self, request: GenerateRequest) -> Iterator[str]:
        """Tokens of the first available model's draft, as they come (not yet validated)."""
        manifest = self.manifests_for(request)[0]
        params = GenerationParams(
            max_tokens=request.max_tokens, temperature=request.temperature, seed=request.seed
        )
        backend = self.cache.get(manifest)
        messages = logic.render_prompt(request)
        yield from backend.stream(messages, params, logic.DRAFT_SCHEMA)

    def close(self) -> None:
        self.cache.clear()


REMOTE_API_KEY_SECRET = "llm-remote-api-key"  # noqa: S105 - the name of the secret file


def remote_api_key(settings: Settings) -> str | None:
    """The remote endpoint's bearer key: the secret ``llm-remote-api-key`` (systemd
    credential or key directory), optional (a loopback or LAN server may need none)."""
    try:
        return read_secret(settings, REMOTE_API_KEY_SECRET).decode().strip() or None
    except SecretError:
        return None


def _present(manifest: ModelManifest) -> bool:
    from pathlib import Path

    return Path(manifest.path).exists()
