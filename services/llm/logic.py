"""Pure rules of the LLM service: validation, voting, routing, prompts, strategies.

Nothing here opens a file, a socket or a model: the orchestrator receives callables that
reach the backends, so every strategy is tested with deterministic fakes and runs unchanged
with llama.cpp, transformers or the remote fallback.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import msgspec

from services.llm.models import (
    Attempt,
    CheckResult,
    Draft,
    Finding,
    GenerateRequest,
    GenerationRecord,
    Strategy,
    Task,
    Vote,
)

# ---------------------------------------------------------------------------------------------
# Prompts

PROMPTS_DIR = Path(__file__).parent / "prompts"
TEMPLATE_VERSION = "v1"
TASKS: tuple[Task, ...] = ("bpm_synthesis", "patient_advice", "interview_summary")
SYSTEM_PROMPT = (
    "Tu es l'assistant d'un pharmacien d'officine français. Tu rédiges en français, "
    "sans inventer de médicament, de dose ni de valeur biologique. Tu ne décides jamais "
    "seul d'arrêter un traitement : tu proposes d'en parler au prescripteur. "
    "Réponds uniquement par un objet JSON conforme au schéma demandé."
)

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(PROMPTS_DIR)),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - plain-text prompts, never rendered as HTML
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)

DRAFT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "texte": {"type": "string"},
        "points": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"regle": {"type": "string"}, "action": {"type": "string"}},
                "required": ["regle", "action"],
            },
        },
        "medicaments": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["texte", "points", "medicaments"],
}


def template_id(task: Task, version: str = TEMPLATE_VERSION) -> str:
    return f"{task}.{version}"


def render_prompt(
    request: GenerateRequest,
    *,
    role: str = "draft",
    previous: Draft | None = None,
    issues: Sequence[CheckResult] = (),
    version: str = TEMPLATE_VERSION,
) -> list[dict[str, str]]:
    """Chat messages for one call: the system rules, then the task's versioned template."""
    template = _ENV.get_template(f"{request.task}.{version}.j2")
    body = template.render(
        findings=request.findings,
        treatment=request.treatment,
        labs=request.labs,
        notes=request.notes,
        role=role,
        previous=msgspec.json.encode(previous).decode() if previous else "",
        issues=[c for c in issues if not c.ok],
        schema=msgspec.json.encode(DRAFT_SCHEMA).decode(),
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": body}]


# ---------------------------------------------------------------------------------------------
# Validation

SEVERITY_RANK: dict[str, int] = {
    "info": 0,
    "low": 1,
    "moderate": 2,
    "high": 3,
    "a_prendre_en_compte": 1,
    "consider": 1,
    "precaution": 2,
    "precaution_emploi": 2,
    "avoid": 3,
    "deconseille": 3,
    "association_deconseillee": 3,
    "contraindicated": 4,
    "contre_indication": 4,
    "contraindication": 4,
}
MUST_ADDRESS_RANK = 3
"""Findings of severity ``avoid`` or above must each be addressed by a point of the draft."""


def severity_rank(severity: str) -> int:
    """Rank of a severity; an unknown one counts as ``avoid`` (it must be addressed)."""
    return SEVERITY_RANK.get(_fold(severity).replace(" ", "_").replace("-", "_"), 3)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def normalise_drug(name: str) -> str:
    """Lower case, no accents, first word (the substance): ``Ramipril 5 mg`` → ``ramipril``."""
    words = re.findall(r"[a-z][a-z-]+", _fold(name))
    return words[0] if words else ""


# International non-proprietary name stems (WHO): a word ending so is taken as a drug name.
_INN_SUFFIXES = (
    "pril", "sartan", "olol", "statine", "statin", "azepam", "azolam", "prazole", "floxacine",
    "cycline", "cilline", "mycine", "gliptine", "gliflozine", "dipine", "parine", "xaban",
    "gatran", "tidine", "triptan", "setron", "profene", "coxib", "semide", "thiazide",
    "oxetine", "pramine", "lukast", "fibrate", "glinide", "mab", "tinib", "conazole",
    "navir", "ciclovir", "amivir", "buvir", "tegravir",
)  # fmt: skip


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_INN_RE = re.compile(r"\b([a-z]{3,}(?:" + "|".join(_INN_SUFFIXES) + r"))\b")
_DOSE_RE = re.compile(r"(\d+(?:[.,]\d+)?)\s*(mg|g|µg|mcg|ug|ml|ui|mui|gouttes?)\b")
_LAB_RE = re.compile(r"(\d+(?:[.,]\d+)?)\s*(mmol/l|µmol/l|umol/l|g/l|mg/l|ml/min|g/dl)")
_EN_WORDS = _wordset("the and of to is are with for your you this that should take patient not be")
_FR_WORDS = _wordset(
    "le la les de des du et est sont avec pour votre vous ce cette il elle un une en au aux "
    "à ne pas que qui sur par traitement médecin patient"
)
_STOP_VERBS = re.compile(
    r"\b(arr[eê]te[rz]?|arr[eê]tez|cesse[rz]?|suspend(?:ez|re)|interromp(?:ez|re)|"
    r"stop(?:per|pez)?|ne prene[zr] plus|supprime[rz]?)\b"
)
_PRESCRIBER = re.compile(r"(m[eé]decin|prescripteur|avis|accord|g[eé]n[eé]raliste|consult)")


def _number(text: str) -> float:
    return float(text.replace(",", "."))


@dataclass(frozen=True)
class Lexicon:
    """What a draft may name: the input's drugs, doses and lab values, and the catalogue."""

    drugs: frozenset[str]
    doses: frozenset[tuple[float, str]]
    labs: frozenset[float]
    catalog: Callable[[str], bool] = field(default=lambda _name: False)

    def knows_drug(self, name: str) -> bool:
        key = normalise_drug(name)
        return bool(key) and (key in self.drugs or self.catalog(key))


def lexicon_for(request: GenerateRequest, catalog: Callable[[str], bool] | None = None) -> Lexicon:
    drugs = {normalise_drug(line.drug) for line in request.treatment}
    doses: set[tuple[float, str]] = set()
    for line in request.treatment:
        for source in (line.dose, line.drug, line.posology):
            for value, unit in _DOSE_RE.findall(_fold(source)):
                doses.add((_number(value), unit))
    for finding in request.findings:
        for text in (finding.message, finding.recommendation):
            drugs.update(m for m in _INN_RE.findall(_fold(text)))
            for value, unit in _DOSE_RE.findall(_fold(text)):
                doses.add((_number(value), unit))
    labs = {lab.value for lab in request.labs}
    return Lexicon(
        drugs=frozenset(d for d in drugs if d),
        doses=frozenset(doses),
        labs=frozenset(labs),
        catalog=catalog or (lambda _name: False),
    )


def parse_draft(text: str) -> Draft:
    """The model's JSON answer as a :class:`Draft` (a fenced block is tolerated)."""
    stripped = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, re.DOTALL)
    if fenced:
        stripped = fenced.group(1)
    return msgspec.json.decode(stripped.encode(), type=Draft)


def check_schema(text: str) -> tuple[CheckResult, Draft | None]:
    try:
        draft = parse_draft(text)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return CheckResult(check="schema", ok=False, detail=str(exc)[:200]), None
    if not draft.texte.strip():
        return CheckResult(check="schema", ok=False, detail="empty texte"), None
    return CheckResult(check="schema", ok=True), draft


def _draft_text(draft: Draft) -> str:
    return " ".join([draft.texte, *(p.action for p in draft.points)])


def check_grounding(draft: Draft, lexicon: Lexicon) -> CheckResult:
    """Every drug, dose and lab value named must come from the input or the catalogue."""
    text = _fold(_draft_text(draft))
    unknown: list[str] = []
    for name in draft.medicaments:
        if not lexicon.knows_drug(name):
            unknown.append(f"drug {normalise_drug(name) or name!r}")
    for word in set(_INN_RE.findall(text)):
        if not lexicon.knows_drug(word):
            unknown.append(f"drug {word}")
    for value, unit in _DOSE_RE.findall(text):
        if (_number(value), unit) not in lexicon.doses:
            unknown.append(f"dose {value} {unit}")
    for value, _unit in _LAB_RE.findall(text):
        if _number(value) not in lexicon.labs:
            unknown.append(f"lab value {value}")
    unknown = sorted(set(unknown))
    return CheckResult(check="grounding", ok=not unknown, detail=", ".join(unknown)[:300])


def must_address(findings: Iterable[Finding]) -> list[str]:
    return sorted({f.rule for f in findings if severity_rank(f.severity) >= MUST_ADDRESS_RANK})


def check_findings(draft: Draft, findings: Sequence[Finding]) -> CheckResult:
    """Every engine finding of severity ``avoid`` or above has a point citing its rule."""
    cited = {_fold(p.regle) for p in draft.points}
    missing = [rule for rule in must_address(findings) if _fold(rule) not in cited]
    return CheckResult(check="findings", ok=not missing, detail=", ".join(missing)[:300])


def check_language(draft: Draft) -> CheckResult:
    """French: more French than English function words (short texts need one French word)."""
    words = re.findall(r"[a-zàâçéèêëîïôûùüÿœ]+", _draft_text(draft).casefold())
    french = sum(1 for w in words if w in _FR_WORDS)
    english = sum(1 for w in words if w in _EN_WORDS)
    ok = french > 0 and french >= english
    return CheckResult(
        check="language", ok=ok, detail="" if ok else f"fr={french} en={english} words"
    )


def check_forbidden(draft: Draft) -> CheckResult:
    """No instruction to stop, suspend or remove a drug without the prescriber."""
    bad: list[str] = []
    for sentence in re.split(r"(?<=[.!?;:\n])\s*", _draft_text(draft)):
        folded = _fold(sentence)
        if _STOP_VERBS.search(folded) and not _PRESCRIBER.search(folded):
            bad.append(folded[:60])
    return CheckResult(
        check="forbidden", ok=not bad, detail=f"{len(bad)} stop instruction(s)" if bad else ""
    )


def validate(
    text: str, request: GenerateRequest, lexicon: Lexicon
) -> tuple[list[CheckResult], Draft | None]:
    """All checks, in order; the draft is returned only when every check passed."""
    schema, draft = check_schema(text)
    if draft is None:
        return [schema], None
    checks = [
        schema,
        check_grounding(draft, lexicon),
        check_findings(draft, request.findings),
        check_language(draft),
        check_forbidden(draft),
    ]
    return checks, draft if all(c.ok for c in checks) else None


# ---------------------------------------------------------------------------------------------
# Voting


def answer_key(draft: Draft) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The normalised structured answer: the rules addressed and the drugs named."""
    rules = tuple(sorted({_fold(p.regle) for p in draft.points}))
    drugs = tuple(sorted({normalise_drug(d) for d in draft.medicaments} - {""}))
    return rules, drugs


def _key_label(key: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    return "rules=" + ",".join(key[0]) + ";drugs=" + ",".join(key[1])


def items_of(draft: Draft) -> set[str]:
    rules, drugs = answer_key(draft)
    return {f"rule:{r}" for r in rules} | {f"drug:{d}" for d in drugs}


def _union(sets: Sequence[set[str]]) -> set[str]:
    return set().union(*sets)


def _common(sets: Sequence[set[str]]) -> set[str]:
    result = set(sets[0]) if sets else set()
    for other in sets[1:]:
        result &= other
    return result


def majority_vote(answers: Sequence[tuple[str, Draft]]) -> Vote:
    """Majority over normalised answers of the valid drafts, in model priority order.

    Tie rule: among the most voted answers, the one given by the model listed first (the
    configured priority order) wins, and ``tie_broken`` says so.
    """
    if not answers:
        return Vote(winner=None, counts={}, dissenters=[], contested=[])
    keys = [answer_key(d) for _, d in answers]
    counts = Counter(keys)
    best = max(counts.values())
    leaders = {k for k, c in counts.items() if c == best}
    winner_index = next(i for i, k in enumerate(keys) if k in leaders)
    winning_key = keys[winner_index]
    all_items = [items_of(d) for _, d in answers]
    contested = sorted(_union(all_items) - _common(all_items))
    return Vote(
        winner=answers[winner_index][0],
        counts={_key_label(k): c for k, c in counts.items()},
        dissenters=[m for (m, _), k in zip(answers, keys, strict=True) if k != winning_key],
        contested=contested,
        tie_broken=len(leaders) > 1,
    )


def item_majority(item: str, drafts: Sequence[Draft]) -> bool:
    """Whether a strict majority of drafts name ``item`` (``rule:x`` or ``drug:y``)."""
    return sum(1 for d in drafts if item in items_of(d)) * 2 > len(drafts)


# ---------------------------------------------------------------------------------------------
# Routing

FAST_MS = 5_000
SLOW_MS = 60_000


def route(task: Task, latency_budget_ms: int, available: int) -> Strategy:
    """Pick a strategy for a task, a latency budget and the number of models available.

    One model or a budget under 5 s: ``single``. The synthesis sent to the GP is the most
    exposed text: ``hybrid`` with three models and a minute, else ``cascade``. Patient advice
    gains most from agreement: ``ensemble``. The interview summary is a faithful rewrite:
    ``cascade`` when the budget allows, else ``single``.
    """
    if available <= 1 or latency_budget_ms < FAST_MS:
        return "single"
    if task == "bpm_synthesis":
        return "hybrid" if available >= 3 and latency_budget_ms >= SLOW_MS else "cascade"
    if task == "patient_advice":
        return "ensemble"
    return "cascade" if latency_budget_ms >= 2 * FAST_MS else "single"


# ---------------------------------------------------------------------------------------------
# Strategies


def sha256_text(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """What a model call returns to the orchestrator."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float = 0.0
    total_s: float = 0.0


class ModelHandle(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    sha256: str


Caller = Callable[[ModelHandle, list[dict[str, str]], bool], Completion]
"""Call one model with chat messages; the flag asks for the JSON-constrained answer."""


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    strategy: Strategy
    draft: Draft | None
    checks: list[CheckResult]
    attempts: list[Attempt]
    vote: Vote | None = None
    fallback_used: bool = False


class NoValidAnswer(Exception):
    """No model produced an answer that passed validation (recorded, never shown)."""


@dataclass
class Orchestrator:
    """Runs one strategy over model handles through ``call`` (real backends or fakes).

    Each answer is validated; an invalid answer is retried once on the same model with the
    failed checks in the prompt, then the ``fallback`` model (the remote endpoint, when
    enabled) is tried. Every call is kept as an :class:`Attempt`.
    """

    call: Caller
    lexicon: Lexicon
    retries: int = 1
    fallback: ModelHandle | None = None
    attempts: list[Attempt] = field(default_factory=list)

    def _attempt(
        self,
        model: ModelHandle,
        request: GenerateRequest,
        role: str,
        previous: Draft | None = None,
        issues: Sequence[CheckResult] = (),
    ) -> tuple[list[CheckResult], Draft | None]:
        messages = render_prompt(request, role=role, previous=previous, issues=issues)
        start = time.perf_counter()
        try:
            completion = self.call(model, messages, True)
        except Exception as exc:  # a backend failure is recorded like a failed check
            checks = [CheckResult(check="backend", ok=False, detail=type(exc).__name__)]
            self._record(model, role, "", checks, Completion(text=""), start)
            return checks, None
        checks, draft = validate(completion.text, request, self.lexicon)
        self._record(model, role, completion.text, checks, completion, start)
        return checks, draft

    def _record(
        self,
        model: ModelHandle,
        role: str,
        text: str,
        checks: list[CheckResult],
        completion: Completion,
        start: float,
    ) -> None:
        self.attempts.append(
            Attempt(
                model=model.name,
                model_sha256=model.sha256,
                role=role,
                output_sha256=sha256_text(text),
                valid=all(c.ok for c in checks),
                checks=checks,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                first_token_ms=round(completion.first_token_s * 1000, 3),
                latency_ms=round((time.perf_counter() - start) * 1000, 3),
            )
        )

    def answer(
        self,
        model: ModelHandle,
        request: GenerateRequest,
        role: str,
        previous: Draft | None = None,
        *,
        use_fallback: bool = True,
    ) -> tuple[list[CheckResult], Draft | None]:
        """One validated answer: try, retry with the failed checks, then the fallback."""
        checks, draft = self._attempt(model, request, role, previous)
        for _ in range(self.retries):
            if draft is not None:
                break
            checks, draft = self._attempt(model, request, "retry", previous, checks)
        if draft is None and use_fallback and self.fallback is not None:
            checks, draft = self._attempt(self.fallback, request, "fallback", previous, checks)
        return checks, draft

    def _used_fallback(self) -> bool:
        return any(a.role == "fallback" for a in self.attempts)

    def single(self, models: Sequence[ModelHandle], request: GenerateRequest) -> Outcome:
        checks, draft = self.answer(models[0], request, "single")
        return Outcome(
            strategy="single",
            draft=draft,
            checks=checks,
            attempts=list(self.attempts),
            fallback_used=self._used_fallback(),
        )

    def ensemble(self, models: Sequence[ModelHandle], request: GenerateRequest) -> Outcome:
        return self._ensemble(models, request)[0]

    def _ensemble(
        self, models: Sequence[ModelHandle], request: GenerateRequest
    ) -> tuple[Outcome, list[tuple[str, Draft]]]:
        answers: list[tuple[str, Draft]] = []
        last: list[CheckResult] = []
        for model in models:
            checks, draft = self.answer(model, request, "ensemble", use_fallback=False)
            last = checks
            if draft is not None:
                answers.append((model.name, draft))
        if not answers and self.fallback is not None:
            last, draft = self._attempt(self.fallback, request, "fallback")
            if draft is not None:
                answers.append((self.fallback.name, draft))
        vote = majority_vote(answers)
        chosen = next((d for m, d in answers if m == vote.winner), None)
        outcome = Outcome(
            strategy="ensemble",
            draft=chosen,
            checks=last if chosen is None else _passed(),
            attempts=list(self.attempts),
            vote=vote,
            fallback_used=self._used_fallback(),
        )
        return outcome, answers

    def cascade(
        self, models: Sequence[ModelHandle], request: GenerateRequest
    ) -> tuple[Outcome, list[Draft]]:
        """Draft (1st model), critique and correct (2nd), verify (3rd); the last valid wins."""
        roles = ("draft", "critique", "verify")
        stages: list[Draft] = []
        current: Draft | None = None
        checks: list[CheckResult] = []
        for index, role in enumerate(roles):
            model = models[min(index, len(models) - 1)]
            stage_checks, draft = self.answer(
                model, request, role, current, use_fallback=current is None
            )
            if draft is not None:
                current, checks = draft, stage_checks
                stages.append(draft)
            elif current is None:
                checks = stage_checks
        outcome = Outcome(
            strategy="cascade",
            draft=current,
            checks=checks if current is None else _passed(),
            attempts=list(self.attempts),
            fallback_used=self._used_fallback(),
        )
        return outcome, stages

    def hybrid(self, models: Sequence[ModelHandle], request: GenerateRequest) -> Outcome:
        """Cascade, then an ensemble vote settles the items the cascade stages disagreed on.

        A contested point (rule) or drug is kept only if a strict majority of the ensemble's
        valid answers name it; points the findings check requires are never removed.
        """
        cascaded, stages = self.cascade(models, request)
        if cascaded.draft is None or len(stages) < 2:
            return _with(cascaded, "hybrid")
        sets = [items_of(s) for s in stages]
        contested = sorted(_union(sets) - _common(sets))
        if not contested:
            return _with(cascaded, "hybrid")
        ensemble, answers = self._ensemble(models, request)
        voters = [d for _, d in answers]
        required = {f"rule:{_fold(r)}" for r in must_address(request.findings)}
        keep = {item for item in contested if item in required or item_majority(item, voters)}
        draft = _settle(cascaded.draft, stages, contested, keep)
        checks, final = validate(msgspec.json.encode(draft).decode(), request, self.lexicon)
        vote = Vote(
            winner=ensemble.vote.winner if ensemble.vote else None,
            counts=ensemble.vote.counts if ensemble.vote else {},
            dissenters=ensemble.vote.dissenters if ensemble.vote else [],
            contested=contested,
        )
        return Outcome(
            strategy="hybrid",
            draft=final or cascaded.draft,
            checks=_passed() if final or cascaded.draft else checks,
            attempts=list(self.attempts),
            vote=vote,
            fallback_used=self._used_fallback(),
        )

    def run(
        self, strategy: Strategy, models: Sequence[ModelHandle], request: GenerateRequest
    ) -> Outcome:
        if not models:
            raise NoValidAnswer("no model available")
        if strategy == "single":
            return self.single(models, request)
        if strategy == "ensemble":
            return self.ensemble(models, request)
        if strategy == "cascade":
            return self.cascade(models, request)[0]
        return self.hybrid(models, request)


def _passed() -> list[CheckResult]:
    return [
        CheckResult(check=name, ok=True)
        for name in ("schema", "grounding", "findings", "language", "forbidden")
    ]


def _with(outcome: Outcome, strategy: Strategy) -> Outcome:
    return msgspec.structs.replace(outcome, strategy=strategy)


def _settle(
    base: Draft, stages: Sequence[Draft], contested: Sequence[str], keep: set[str]
) -> Draft:
    drop = set(contested) - keep
    points = {_fold(p.regle): p for s in stages for p in s.points}
    drugs = {normalise_drug(d): d for s in stages for d in s.medicaments}
    kept_points = [p for p in base.points if f"rule:{_fold(p.regle)}" not in drop]
    present = {_fold(p.regle) for p in kept_points}
    for item in sorted(keep):
        kind, _, value = item.partition(":")
        if kind == "rule" and value not in present and value in points:
            kept_points.append(points[value])
    kept_drugs = [d for d in base.medicaments if f"drug:{normalise_drug(d)}" not in drop]
    have = {normalise_drug(d) for d in kept_drugs}
    for item in sorted(keep):
        kind, _, value = item.partition(":")
        if kind == "drug" and value not in have and value in drugs:
            kept_drugs.append(drugs[value])
    return Draft(texte=base.texte, points=kept_points, medicaments=kept_drugs)


def stored_generation(store: Any, generation_id: str) -> GenerationRecord | None:
    """A stored generation's traceability record (its draft, task, patient, validity), for
    other services that print a validated draft (documents). Not audited: the caller audits.

    ``store`` is the domain ``appliance.store.Store``; the one read of this otherwise pure
    module, kept here because the package ``__init__`` is the plugin's composition.
    """
    from services.llm import store as repository

    item = repository.get(store, generation_id)
    return None if item is None else item.entity
