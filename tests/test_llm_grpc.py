"""The LLM gRPC interface with a real gRPC client: Health, Generate, GenerateStream, auth,
invalid arguments; generation runs the real llama.cpp loader on the tiny GGUF."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from appliance.platform import Platform
from models.registry import ModelRegistry, embedded_model_path
from models.tiny import build_tiny_gguf
from services.llm import store as repository
from services.llm.rpc.server import create_server, pb2, pb2_grpc
from services.llm.runtime import LlmRuntime
from tests.helpers_server import (
    free_port,
    log_tail,
    prepare_appliance,
    start_process,
    stop_process,
    wait_until_live,
)

CONTEXT = {"treatment": [{"drug": "Ramipril", "dose": "5 mg"}], "findings": []}


@pytest.fixture
def stub(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, LlmRuntime]]:
    source = embedded_model_path()
    assert source is not None
    tiny = build_tiny_gguf(
        tmp_path_factory.getbasetemp() / "tiny-models" / "tiny-llama.gguf", source
    )
    ModelRegistry(platform.settings.llm_models_path).add(tiny, name="tiny")
    runtime = LlmRuntime(platform.settings)
    server, port = create_server(platform, runtime, port=0)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb2_grpc.LlmStub(channel), runtime
    finally:
        channel.close()
        server.stop(grace=None)
        runtime.close()


def request(**changes: Any) -> Any:
    fields: dict[str, Any] = {
        "task": "patient_advice",
        "patient_id": "pat-7",
        "context_json": json.dumps(CONTEXT),
        "strategy": "single",
        "max_tokens": 16,
        "models": ["tiny"],
    }
    fields.update(changes)
    return pb2.GenerateRequest(**fields)


def test_health_lists_present_models(stub: tuple[Any, LlmRuntime]) -> None:
    reply = stub[0].Health(pb2.HealthRequest())
    assert reply.status == "SERVING"
    assert "tiny" in reply.models


def test_generate_is_stored_and_audited(
    stub: tuple[Any, LlmRuntime], platform: Platform, token_for: Callable[..., str]
) -> None:
    metadata = (("authorization", f"Bearer {token_for('llm:generate')}"),)
    reply = stub[0].Generate(request(), metadata=metadata)
    assert reply.id.startswith("gen-")
    assert list(reply.models) == ["tiny"]
    assert reply.valid is (reply.draft_json != "")  # random weights: usually rejected
    stored = repository.get(platform.store, reply.id)
    assert stored is not None
    assert stored.entity.attempts[0].model == "tiny"
    assert any(e.object_id == reply.id for e in platform.audit.entries())
    tokens = list(stub[0].GenerateStream(request(max_tokens=8), metadata=metadata))
    assert tokens[-1].done
    assert len(tokens) > 1


@pytest.mark.parametrize(
    ("changes", "scopes", "code"),
    [
        ({}, None, grpc.StatusCode.UNAUTHENTICATED),
        ({}, ("llm:read",), grpc.StatusCode.PERMISSION_DENIED),
        ({"task": "poem"}, ("llm:generate",), grpc.StatusCode.INVALID_ARGUMENT),
        ({"context_json": "[1"}, ("llm:generate",), grpc.StatusCode.INVALID_ARGUMENT),
        ({"patient_id": "Jean Dupont"}, ("llm:generate",), grpc.StatusCode.INVALID_ARGUMENT),
        ({"models": ["BioMistral-7B"]}, ("llm:generate",), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_refusals_have_grpc_status_codes(
    stub: tuple[Any, LlmRuntime],
    token_for: Callable[..., str],
    changes: dict[str, Any],
    scopes: tuple[str, ...] | None,
    code: grpc.StatusCode,
) -> None:
    metadata = () if scopes is None else (("authorization", f"Bearer {token_for(*scopes)}"),)
    with pytest.raises(grpc.RpcError) as caught:
        stub[0].Generate(request(**changes), metadata=metadata)
    assert caught.value.code() == code


def test_a_taken_port_is_an_error(platform: Platform, tmp_path: Path) -> None:
    runtime = LlmRuntime(platform.settings)
    server, port = create_server(platform, runtime, port=0)
    server.start()
    try:
        with pytest.raises(OSError, match="cannot bind"):
            create_server(platform, runtime, port=port)
    finally:
        server.stop(grace=None)


def test_hygie_serve_grpc_serves_health(tmp_path: Path) -> None:
    env = {**prepare_appliance(tmp_path), "HYGIE_EMBEDDED_WORKER": "false"}
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    proc = start_process(
        env, log, "serve", "--host", "127.0.0.1", "--port", str(http_port), "--grpc", str(grpc_port)
    )
    try:
        wait_until_live(f"http://127.0.0.1:{http_port}", proc, log)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = pb2_grpc.LlmStub(channel).Health(pb2.HealthRequest(), timeout=10)
        assert reply.status == "SERVING"
        assert "SmolLM2-135M-Instruct" in reply.models
    finally:
        assert stop_process(proc, signal.SIGINT, timeout=20) == 0, log_tail(log)
