"""Shapes of the LLM service: the structured context, the drafts, the traceability record.

``Finding`` mirrors what the analysis engine emits (kind, rule, severity, atc, message,
recommendation, confidence, evidence); it is declared here so this service does not import
the engine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

Task = Literal["bpm_synthesis", "patient_advice", "interview_summary"]
Strategy = Literal["single", "ensemble", "cascade", "hybrid"]
Short = Annotated[str, msgspec.Meta(max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=2000)]
PatientRef = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    kind: Short
    rule: Short
    severity: Short
    atc: list[Short] | Short | None = None
    message: Text = ""
    recommendation: Text = ""
    confidence: float | None = None
    evidence: list[Any] | dict[str, Any] | str | None = None
    recommendation_gp: Text = ""
    """The advice worded for the prescriber (used by ``bpm_synthesis``)."""


class TreatmentLine(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    drug: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    atc: Short | None = None
    dose: Short = ""
    """e.g. ``500 mg``; the posology, e.g. ``1 comprimé matin et soir``."""
    posology: Short = ""


class LabValue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    value: float
    unit: Annotated[str, msgspec.Meta(max_length=20)] = ""


class GenerateRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    task: Task
    patient_id: PatientRef
    """The patient record this draft belongs to (its id, never a name)."""
    findings: Annotated[list[Finding], msgspec.Meta(max_length=200)] = []
    treatment: Annotated[list[TreatmentLine], msgspec.Meta(max_length=200)] = []
    labs: Annotated[list[LabValue], msgspec.Meta(max_length=100)] = []
    notes: Annotated[str, msgspec.Meta(max_length=8000)] = ""
    """Interview notes (``interview_summary``)."""
    strategy: Strategy | None = None
    """Forced strategy; by default the router picks one from the task and the budget."""
    latency_budget_ms: Annotated[int, msgspec.Meta(ge=100, le=600_000)] = 30_000
    models: Annotated[list[str], msgspec.Meta(max_length=5)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=8, le=1024)] = 384
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**31)] = 0


class DraftPoint(msgspec.Struct, frozen=True, kw_only=True):
    regle: str
    """The engine rule this point answers (``Finding.rule``)."""
    action: str


class Draft(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every task answers: the text, the findings it addresses, the drugs it names."""

    texte: Annotated[str, msgspec.Meta(min_length=1)]
    points: list[DraftPoint] = []
    medicaments: list[str] = []


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    check: str
    ok: bool
    detail: str = ""


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One call to one model inside a strategy, with what validation said about it."""

    model: str
    model_sha256: str
    role: str
    """``single``, ``ensemble``, ``draft``, ``critique``, ``verify``, ``retry``, ``fallback``."""
    output_sha256: str
    valid: bool
    checks: list[CheckResult]
    prompt_tokens: int
    completion_tokens: int
    first_token_ms: float
    latency_ms: float


class Vote(msgspec.Struct, frozen=True, kw_only=True):
    winner: str | None
    """The model whose answer won (``None`` when no answer was valid)."""
    counts: dict[str, int]
    """Votes per normalised answer key."""
    dissenters: list[str]
    contested: list[str]
    """Rules and drugs not named by every valid answer."""
    tie_broken: bool = False


class GenerationRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Everything needed to trace a draft back to the weights, the prompt and the input."""

    id: str
    task: Task
    patient_id: str
    strategy: Strategy
    template_version: str
    params: dict[str, Any]
    input_sha256: str
    output_sha256: str
    valid: bool
    draft: Draft | None
    attempts: list[Attempt]
    vote: Vote | None = None
    fallback_used: bool = False
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: datetime | None = None
    actor: str = ""


class GenerateResponse(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    task: Task
    strategy: Strategy
    valid: bool
    draft: Draft | None
    """``None`` when no answer passed validation: nothing is shown, the failure is recorded."""
    checks: list[CheckResult]
    vote: Vote | None
    models: list[str]
    template_version: str
    latency_ms: float


class ModelView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    backend: str
    sha256: str
    context_length: int
    licence: str
    intended_use: str
    present: bool
    loaded: bool


JobKind = Literal["generate", "register_model"]
JobStatus = Literal["queued", "running", "done", "failed"]
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"
ModelName = Annotated[str, msgspec.Meta(pattern=MODEL_NAME_PATTERN)]


class RegisterModelRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Register weights already copied into the models folder (``hygie models add`` over
    HTTP); the checksum is computed, and compared with ``sha256`` when given, by the worker."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    """Relative to the models folder (``llm_models_path``); nothing outside it is read."""
    name: ModelName | None = None
    backend: Literal["llama_cpp", "transformers"] | None = None
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")] | None = None
    context_length: Annotated[int, msgspec.Meta(ge=128, le=1_048_576)] = 2048
    licence: Annotated[str, msgspec.Meta(max_length=100)] = "unknown"
    intended_use: Annotated[str, msgspec.Meta(max_length=500)] = ""


class LlmJob(msgspec.Struct, frozen=True, kw_only=True):
    """Work the HTTP API hands to the worker, so that no model runs inside a request.

    Versioned: queued → running → done or failed, each step a new version. The request
    context (actor, role, address, request id) is kept to audit the work as the caller's.
    """

    id: str
    kind: JobKind
    status: JobStatus
    generate: GenerateRequest | None = None
    register: RegisterModelRequest | None = None
    generation_id: str | None = None
    model_name: str | None = None
    error: str | None = None
    actor: str
    role: str
    client_addr: str
    request_id: str
    created_at: datetime


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /api/v1/llm/jobs/{id}`` answers: the state, then the result."""

    id: str
    kind: JobKind
    status: JobStatus
    generation: GenerateResponse | None = None
    model: ModelView | None = None
    error: str | None = None
