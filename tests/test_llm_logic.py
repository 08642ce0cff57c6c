"""Pure logic of LLM drafting: validation, voting, routing, strategies (deterministic fakes),
and the LRU/memory policy of the model cache."""

from __future__ import annotations

import json

import msgspec
import pytest

from models.loaders import (
    GenerationParams,
    ModelCache,
    RawGeneration,
    TextBackend,
    plan_evictions,
)
from models.registry import ModelManifest
from services.llm import logic
from services.llm.models import (
    Draft,
    DraftPoint,
    Finding,
    GenerateRequest,
    Task,
    TreatmentLine,
)

FINDING = Finding(
    kind="interaction",
    rule="ANSM-IEC-AINS",
    severity="avoid",
    atc=["C09AA05", "M01AE01"],
    message="Association déconseillée : ramipril et ibuprofène (insuffisance rénale).",
    recommendation="Proposer le paracétamol au prescripteur.",
    confidence=0.9,
    evidence=["ramipril", "ibuprofène"],
)
MINOR = Finding(kind="stopp", rule="STOPP-B1", severity="precaution", message="à surveiller")
REQUEST = GenerateRequest(
    task="bpm_synthesis",
    patient_id="pat-1",
    findings=[FINDING, MINOR],
    treatment=[
        TreatmentLine(drug="Ramipril", dose="5 mg", posology="1 le matin"),
        TreatmentLine(drug="Ibuprofène", dose="400 mg"),
    ],
)
LEXICON = logic.lexicon_for(REQUEST, catalog=lambda name: name == "paracetamol")


def good(**changes: object) -> str:
    answer: dict[str, object] = {
        "texte": "Le patient prend du ramipril 5 mg avec de l'ibuprofène 400 mg ; "
        "nous proposons au prescripteur le paracétamol.",
        "points": [{"regle": "ANSM-IEC-AINS", "action": "En parler au médecin."}],
        "medicaments": ["ramipril", "ibuprofène", "paracétamol"],
    }
    answer.update(changes)
    return json.dumps(answer, ensure_ascii=False)


def failed(text: str) -> set[str]:
    checks, _ = logic.validate(text, REQUEST, LEXICON)
    return {c.check for c in checks if not c.ok}


def test_a_grounded_french_answer_passes() -> None:
    checks, draft = logic.validate(good(), REQUEST, LEXICON)
    assert draft is not None, checks
    assert [c.check for c in checks] == ["schema", "grounding", "findings", "language", "forbidden"]


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ('{"texte": "Bonjour", "points": [', "schema"),
        ('{"text": "Bonjour"}', "schema"),
        ("```json\n[1, 2]\n```", "schema"),
        (good(medicaments=["ramipril", "zorglubine"]), "grounding"),
        (good(texte="Le patient prend de l'atorvastatine avec le traitement."), "grounding"),
        (good(texte="Le patient prend du ramipril 10 mg le matin."), "grounding"),
        (good(texte="La kaliémie est de 6,2 mmol/L pour ce patient."), "grounding"),
        (good(points=[]), "findings"),
        (good(points=[{"regle": "STOPP-B1", "action": "Surveiller."}]), "findings"),
        (good(texte="The patient should take this drug with food.", points=[]), "language"),
        (good(texte="Arrêtez l'ibuprofène dès ce soir."), "forbidden"),
    ],
)
def test_crafted_bad_answers_fail_the_right_check(text: str, check: str) -> None:
    assert check in failed(text)


def test_stopping_a_drug_with_the_prescriber_is_allowed() -> None:
    text = good(texte="Arrêter l'ibuprofène est à discuter avec votre médecin.")
    assert failed(text) == set()


def test_ordinary_french_words_are_not_taken_for_drugs() -> None:
    text = good(texte="Le ramipril peut servir ; nous proposons au médecin le paracétamol.")
    assert failed(text) == set()
    assert "grounding" in failed(good(texte="Le patient prend du ritonavir avec le ramipril."))


def test_catalogue_drugs_and_fenced_json_are_accepted() -> None:
    assert failed("```json\n" + good() + "\n```") == set()


def test_unknown_severity_counts_as_must_address() -> None:
    assert logic.severity_rank("nouvelle-gravité") == logic.MUST_ADDRESS_RANK
    assert logic.severity_rank("Contre-indication") == 4
    assert logic.must_address([FINDING, MINOR]) == ["ANSM-IEC-AINS"]


def draft(rules: list[str], drugs: list[str]) -> Draft:
    return Draft(
        texte="Synthèse pour le médecin.",
        points=[DraftPoint(regle=r, action="En parler au médecin.") for r in rules],
        medicaments=drugs,
    )


def test_majority_vote_on_normalised_answers() -> None:
    vote = logic.majority_vote(
        [
            ("a", draft(["R1"], ["Ramipril 5 mg"])),
            ("b", draft(["r1"], ["ramipril"])),
            ("c", draft(["R1", "R2"], ["ramipril"])),
        ]
    )
    assert vote.winner == "a"
    assert vote.dissenters == ["c"]
    assert vote.contested == ["rule:r2"]
    assert not vote.tie_broken
    assert sorted(vote.counts.values()) == [1, 2]


def test_a_tie_goes_to_the_first_model_in_priority_order() -> None:
    vote = logic.majority_vote([("a", draft(["R1"], [])), ("b", draft(["R2"], []))])
    assert vote.winner == "a"
    assert vote.tie_broken
    assert vote.dissenters == ["b"]
    assert logic.majority_vote([]).winner is None


@pytest.mark.parametrize(
    ("task", "budget", "models", "expected"),
    [
        ("bpm_synthesis", 120_000, 1, "single"),
        ("bpm_synthesis", 1_000, 3, "single"),
        ("bpm_synthesis", 120_000, 3, "hybrid"),
        ("bpm_synthesis", 30_000, 3, "cascade"),
        ("bpm_synthesis", 120_000, 2, "cascade"),
        ("patient_advice", 30_000, 3, "ensemble"),
        ("interview_summary", 30_000, 2, "cascade"),
        ("interview_summary", 6_000, 2, "single"),
    ],
)
def test_routing(task: Task, budget: int, models: int, expected: str) -> None:
    assert logic.route(task, budget, models) == expected


def test_prompts_are_french_versioned_and_carry_the_context() -> None:
    messages = logic.render_prompt(REQUEST)
    body = messages[1]["content"]
    assert "ANSM-IEC-AINS" in body
    assert "Ramipril 5 mg" in body
    assert "Tâche" in body
    critique = logic.render_prompt(REQUEST, role="critique", previous=draft(["R1"], []))
    assert "brouillon" in critique[1]["content"]
    assert logic.template_id("bpm_synthesis") == "bpm_synthesis.v1"


# -- strategies with deterministic fakes -------------------------------------------------


def handles(*names: str) -> list[logic.ModelHandle]:
    return [logic.ModelHandle(name=n, sha256=f"sha-{n}") for n in names]


def fake(answers: dict[str, list[str]]) -> tuple[logic.Caller, list[tuple[str, str]]]:
    """Each model answers its scripted texts in turn (the last one repeats)."""
    calls: list[tuple[str, str]] = []

    def call(
        handle: logic.ModelHandle, messages: list[dict[str, str]], _: bool
    ) -> logic.Completion:
        queue = answers[handle.name]
        text = queue.pop(0) if len(queue) > 1 else queue[0]
        calls.append((handle.name, messages[1]["content"][-40:]))
        if text == "boom":
            raise ConnectionError("backend down")
        return logic.Completion(text=text, prompt_tokens=10, completion_tokens=5)

    return call, calls


def orchestrator(call: logic.Caller, fallback: str | None = None) -> logic.Orchestrator:
    fb = logic.ModelHandle(name=fallback, sha256="remote") if fallback else None
    return logic.Orchestrator(call=call, lexicon=LEXICON, fallback=fb)


def test_single_retries_once_then_falls_back_and_records_everything() -> None:
    call, calls = fake({"m1": ['{"broken', good(points=[])], "remote": [good()]})
    outcome = orchestrator(call, "remote").run("single", handles("m1"), REQUEST)
    assert outcome.draft is not None
    assert outcome.fallback_used
    assert [a.role for a in outcome.attempts] == ["single", "retry", "fallback"]
    assert [a.valid for a in outcome.attempts] == [False, False, True]
    assert "findings" in calls[1][1] or len(calls) == 3
    assert outcome.attempts[0].output_sha256 == logic.sha256_text('{"broken')


def test_single_without_a_valid_answer_shows_nothing() -> None:
    call, _ = fake({"m1": ["boom"]})
    outcome = orchestrator(call).run("single", handles("m1"), REQUEST)
    assert outcome.draft is None
    assert outcome.checks[0].check == "backend"


def test_ensemble_votes_among_valid_answers_and_reports_disagreement() -> None:
    other = good(
        points=[
            {"regle": "ANSM-IEC-AINS", "action": "En parler au médecin."},
            {"regle": "STOPP-B1", "action": "Surveiller la tension."},
        ]
    )
    call, _ = fake({"a": [other], "b": [good()], "c": [good()], "d": ["not json"]})
    outcome = orchestrator(call).run("ensemble", handles("a", "b", "c", "d"), REQUEST)
    assert outcome.vote is not None
    assert outcome.vote.winner == "b"
    assert outcome.vote.dissenters == ["a"]
    assert outcome.vote.contested == ["rule:stopp-b1"]
    assert outcome.draft is not None
    assert len(outcome.draft.points) == 1


def test_cascade_drafts_critiques_verifies_and_keeps_the_last_valid() -> None:
    corrected = good(
        texte="Synthèse corrigée : ramipril 5 mg et ibuprofène 400 mg, avis du médecin."
    )
    call, calls = fake({"a": [good(medicaments=["zorglubine"])], "b": [corrected], "c": ["nope"]})
    outcome = orchestrator(call).run("cascade", handles("a", "b", "c"), REQUEST)
    assert outcome.draft is not None
    assert outcome.draft.texte.startswith("Synthèse corrigée")
    roles = [(a.model, a.role, a.valid) for a in outcome.attempts]
    assert roles[:2] == [("a", "draft", False), ("a", "retry", False)]
    assert ("b", "critique", True) in roles
    assert ("c", "verify", False) in roles
    assert [name for name, _ in calls].count("c") == 2  # verify + its retry


def test_cascade_with_one_model_plays_every_role() -> None:
    call, calls = fake({"solo": [good()]})
    outcome = orchestrator(call).run("cascade", handles("solo"), REQUEST)
    assert [a.role for a in outcome.attempts] == ["draft", "critique", "verify"]
    assert outcome.draft is not None
    assert {n for n, _ in calls} == {"solo"}


def test_hybrid_settles_contested_items_by_ensemble_vote() -> None:
    with_extra = good(
        points=[
            {"regle": "ANSM-IEC-AINS", "action": "En parler au médecin."},
            {"regle": "STOPP-B1", "action": "Surveiller."},
        ]
    )
    # draft adds STOPP-B1, critique drops it, verify keeps it dropped; the ensemble (a, b, c)
    # mostly drops it as well, so the final draft has no STOPP-B1 point.
    call, _ = fake({"a": [with_extra, with_extra], "b": [good(), good()], "c": [good(), good()]})
    outcome = orchestrator(call).run("hybrid", handles("a", "b", "c"), REQUEST)
    assert outcome.strategy == "hybrid"
    assert outcome.vote is not None
    assert outcome.vote.contested == ["rule:stopp-b1"]
    assert outcome.draft is not None
    assert [p.regle for p in outcome.draft.points] == ["ANSM-IEC-AINS"]


def test_no_model_is_an_error() -> None:
    call, _ = fake({})
    with pytest.raises(logic.NoValidAnswer):
        orchestrator(call).run("single", [], REQUEST)


# -- cache policy -------------------------------------------------------------------------


def test_plan_evictions_by_count_and_by_budget() -> None:
    loaded = [("a", 10), ("b", 10), ("c", 10)]
    assert plan_evictions(loaded, 10, capacity=3, budget_bytes=100) == ["a"]
    assert plan_evictions(loaded, 10, capacity=5, budget_bytes=100) == []
    assert plan_evictions(loaded, 85, capacity=5, budget_bytes=100) == ["a", "b"]
    assert plan_evictions(loaded, 500, capacity=5, budget_bytes=100) == ["a", "b", "c"]


class FakeBackend:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.sha256, self.log = name, "x", log

    def generate(self, *_: object) -> RawGeneration:
        return RawGeneration(
            text="{}", prompt_tokens=1, completion_tokens=1, first_token_s=0, total_s=0
        )

    def stream(self, *_: object) -> list[str]:
        return []

    def close(self) -> None:
        self.log.append(f"closed {self.name}")


def manifest(name: str, size: int = 100, sha: str = "x") -> ModelManifest:
    return ModelManifest(name=name, backend="llama_cpp", path="/x", sha256=sha, size_bytes=size)


def test_model_cache_is_lru_and_unloads_cleanly() -> None:
    log: list[str] = []

    def loader(m: ModelManifest) -> TextBackend:
        return FakeBackend(m.name, log)  # type: ignore[return-value]

    cache = ModelCache(
        capacity=2, budget_bytes=10_000, loader=loader, size_of=lambda m: m.size_bytes
    )
    a = cache.get(manifest("a"))
    cache.get(manifest("b"))
    assert cache.get(manifest("a")) is a  # hit, and a becomes most recent
    cache.get(manifest("c"))
    assert cache.loaded() == ["a", "c"]
    assert log == ["closed b"]
    cache.get(manifest("big", size=9_950))
    assert cache.loaded() == ["big"]
    assert cache.evictions == ["b", "a", "c"]
    cache.get(manifest("big", size=9_950, sha="y"))  # new weights under the same name: reload
    assert log[-1] == "closed big"
    cache.clear()
    assert cache.loaded() == []
    assert msgspec.structs.asdict(GenerationParams())["max_tokens"] == 256
