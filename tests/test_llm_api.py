"""LLM drafting end to end: the real SmolLM2 model on CPU behind ``POST /api/v1/llm/generate``,
the stored traceability record, the audit entry (ids only), SSE streaming, problem details."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.config import Settings
from appliance.registry import INSTALLED_SERVICES
from appliance.tasks import record_heartbeat
from services.llm import API_PLUGIN
from services.llm.runtime import LlmRuntime

BODY: dict[str, Any] = {
    "task": "patient_advice",
    "patient_id": "pat-0001",
    "findings": [
        {
            "kind": "interaction",
            "rule": "ANSM-IEC-AINS",
            "severity": "avoid",
            "atc": ["C09AA05", "M01AE01"],
            "message": "Association déconseillée : ramipril et ibuprofène.",
            "recommendation": "Proposer le paracétamol au prescripteur.",
            "confidence": 0.9,
            "evidence": ["ramipril", "ibuprofène"],
        }
    ],
    "treatment": [
        {"drug": "Ramipril", "dose": "5 mg", "posology": "1 le matin"},
        {"drug": "Ibuprofène", "dose": "400 mg"},
    ],
    "max_tokens": 48,
    "strategy": "single",
}


@pytest.fixture
def llm_client(settings: Settings) -> Iterator[TestClient]:  # type: ignore[type-arg]
    # one call per generation: the real model is slow on a shared CPU
    settings = settings.model_copy(update={"llm_retries": 0})
    app = create_app(settings, plugins=(*INSTALLED_SERVICES, API_PLUGIN))
    with TestClient(app=app) as test_client:
        record_heartbeat(app.state.platform.store, "test-worker")
        yield test_client
        runtime = app.state.get("llm_runtime")
        if isinstance(runtime, LlmRuntime):
            runtime.close()


def test_generate_with_the_real_smollm2_is_traced_and_audited(
    llm_client: TestClient,  # type: ignore[type-arg]
    auth: dict[str, str],
) -> None:
    response = llm_client.post("/api/v1/llm/generate", json=BODY, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["models"] == ["SmolLM2-135M-Instruct"]
    assert body["strategy"] == "single"
    assert body["template_version"] == "patient_advice.v1"
    # A 135M model rarely addresses the finding: then nothing is shown, and it is recorded.
    assert body["valid"] is (body["draft"] is not None)
    record = llm_client.get(f"/api/v1/llm/generations/{body['id']}", headers=auth).json()
    assert record["patient_id"] == "pat-0001"
    assert record["params"]["max_tokens"] == 48
    assert len(record["input_sha256"]) == 64
    first = record["attempts"][0]
    assert first["model"] == "SmolLM2-135M-Instruct"
    assert len(first["model_sha256"]) == 64
    assert 0 < first["completion_tokens"] <= 48
    assert first["checks"][0]["check"] == "schema"
    # 48 tokens may cut the grammar-constrained JSON short: a failed schema check is then
    # recorded, never shown.
    assert [a["role"] for a in record["attempts"]] == ["single"]  # llm_retries = 0
    audit = llm_client.app.state.platform.audit
    entries = [e for e in audit.entries() if e.object_type == "llm_generation"]
    assert [e.object_id for e in entries] == [body["id"]]
    assert "ramipril" not in msgspec.json.encode(entries).decode().lower()


def test_models_endpoint_and_streaming(llm_client: TestClient, auth: dict[str, str]) -> None:  # type: ignore[type-arg]
    models = llm_client.get("/api/v1/llm/models", headers=auth).json()
    embedded = next(m for m in models if m["name"] == "SmolLM2-135M-Instruct")
    assert embedded["present"]
    with llm_client.stream(
        "POST", "/api/v1/llm/generate/stream", json={**BODY, "max_tokens": 12}, headers=auth
    ) as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    assert "event: token" in text
    assert text.rstrip().endswith("event: done\ndata:") or "event: done" in text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"task": "poem", "patient_id": "p"}, 400),
        ({**BODY, "patient_id": "Jean Dupont"}, 400),
        ({**BODY, "max_tokens": 100_000}, 400),
        ({**BODY, "extra": 1}, 400),
        ({**BODY, "models": ["BioMistral-7B"]}, 409),
    ],
)
def test_bad_requests_are_problems(
    llm_client: TestClient,  # type: ignore[type-arg]
    auth: dict[str, str],
    body: dict[str, Any],
    status: int,
) -> None:
    response = llm_client.post("/api/v1/llm/generate", json=body, headers=auth)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_generate_needs_a_token(llm_client: TestClient) -> None:  # type: ignore[type-arg]
    assert llm_client.post("/api/v1/llm/generate", json=BODY).status_code == 401
    missing = llm_client.get("/api/v1/llm/generations/gen-" + "0" * 32)
    assert missing.status_code == 401
