"""Remote fallback: llama-cpp-python's own OpenAI-compatible server on loopback, the
circuit breaker opening and closing, pseudonymisation, and the orchestrator falling back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from purgatory.domain.model import OpenedState

from appliance.config import Settings
from appliance.resilience import Breakers, RetryPolicy
from models.loaders import GenerationParams, ModelCache
from models.registry import ModelRegistry, embedded_model_path
from models.remote import CIRCUIT, RemoteEndpoint, pseudonymise
from models.tiny import build_tiny_gguf
from services.llm.models import GenerateRequest, TreatmentLine
from services.llm.runtime import LlmRuntime
from tests.helpers_server import free_port

RETRY = RetryPolicy(attempts=1, initial_wait_s=0.01, max_wait_s=0.01)
PARAMS = GenerationParams(max_tokens=8)
MESSAGES = [{"role": "user", "content": "Bonjour, patient né le 01/02/1950, tél 06 12 34 56 78"}]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    source = embedded_model_path()
    assert source is not None
    model = build_tiny_gguf(
        tmp_path_factory.getbasetemp() / "tiny-models" / "tiny-llama.gguf", source
    )
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port), "--model_alias", "tiny", "--n_ctx", "512", "--n_threads", "1"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_pseudonymise_masks_identifiers() -> None:
    text = pseudonymise("NIR 1 50 02 75 123 456 78, jean@x.fr, 06.12.34.56.78, né le 1/2/1950")
    assert text == "NIR [nir], [courriel], [téléphone], né le [date]"


def test_generate_through_llama_cpp_openai_server(llama_server: str) -> None:
    endpoint = RemoteEndpoint(llama_server, model="tiny", retry=RETRY, breakers=Breakers(3, 1))
    raw = endpoint.generate(MESSAGES, PARAMS)
    assert raw.completion_tokens > 0
    assert raw.prompt_tokens > 0
    body = endpoint.payload(MESSAGES, PARAMS, None)
    assert "06 12" not in json.dumps(body)
    assert "[date]" in body["messages"][0]["content"]


def test_breaker_opens_on_a_dead_link_and_closes_after_its_ttl(llama_server: str) -> None:
    breakers = Breakers(threshold=2, ttl_s=0.5)
    dead = RemoteEndpoint(
        f"http://127.0.0.1:{free_port()}", model="tiny", retry=RETRY, breakers=breakers
    )
    live = RemoteEndpoint(llama_server, model="tiny", retry=RETRY, breakers=breakers)
    for _ in range(2):
        with pytest.raises(httpx.ConnectError):
            dead.generate(MESSAGES, PARAMS)
    with pytest.raises(OpenedState):
        live.generate(MESSAGES, PARAMS)  # refused without trying: the circuit is open
    time.sleep(0.6)
    assert live.generate(MESSAGES, PARAMS).completion_tokens > 0  # half-open probe succeeds
    import asyncio

    assert asyncio.run(breakers.state(CIRCUIT)) == "closed"


def test_runtime_falls_back_to_the_remote_when_local_answers_fail(
    tmp_path: Path, settings: Settings
) -> None:
    good = {
        "texte": "Le patient prend du ramipril 5 mg, à voir avec le médecin.",
        "points": [],
        "medicaments": ["ramipril"],
    }
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"content": json.dumps(good)}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 20},
            },
        )

    remote = RemoteEndpoint(
        "http://remote.invalid", model="gpt", retry=RETRY, breakers=Breakers(3, 1),
        transport=httpx.MockTransport(handler),
    )  # fmt: skip
    registry = ModelRegistry(tmp_path / "models")  # the embedded SmolLM2 only

    class Garbage:
        name, sha256 = "SmolLM2-135M-Instruct", "x"

        def generate(self, *_: object) -> object:
            from models.loaders import RawGeneration

            return RawGeneration(
                text="{", prompt_tokens=1, completion_tokens=1, first_token_s=0, total_s=0
            )

        def close(self) -> None: ...

    runtime = LlmRuntime(
        settings,
        registry=registry,
        remote=remote,
        cache=ModelCache(loader=lambda m: Garbage()),  # type: ignore[arg-type,return-value]
    )
    request = GenerateRequest(
        task="patient_advice",
        patient_id="pat-9",
        treatment=[TreatmentLine(drug="Ramipril", dose="5 mg")],
        strategy="single",
    )
    record = runtime.generate(request, actor="u-1")
    assert record.valid
    assert record.fallback_used
    assert [a.role for a in record.attempts] == ["single", "retry", "fallback"]
    assert record.attempts[-1].model == "remote:remote"
    assert seen[0]["response_format"] is not None
    assert "pat-9" not in json.dumps(seen)
    interview = GenerateRequest(
        task="interview_summary", patient_id="p", notes="x", strategy="single"
    )
    assert not runtime.generate(interview, actor="u-1").fallback_used  # never leaves the box


def test_remote_from_settings_reads_its_key_secret(settings: Settings) -> None:
    from services.llm.runtime import REMOTE_API_KEY_SECRET

    enabled = settings.model_copy(
        update={"llm_remote_enabled": True, "llm_remote_url": "http://127.0.0.1:9"}
    )
    runtime = LlmRuntime(enabled)
    assert runtime.remote is not None
    assert "Authorization" not in runtime.remote._headers
    (settings.key_path / REMOTE_API_KEY_SECRET).write_text("sk-test\n")
    keyed = LlmRuntime(enabled).remote
    assert keyed is not None
    assert keyed._headers == {"Authorization": "Bearer sk-test"}
    assert LlmRuntime(settings).remote is None  # off by default
