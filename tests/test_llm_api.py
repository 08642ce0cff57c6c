"""LLM drafting end to end: ``POST /api/v1/llm/generate`` queues a job (202), the worker's
task runs it with the real SmolLM2 model on CPU, the job is polled and streamed (SSE); the
stored traceability record, the audit entries (ids only), model management, problems."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.config import Settings
from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.registry import INSTALLED_SERVICES
from appliance.tasks import create_huey, record_heartbeat
from models.registry import embedded_model_path
from services.llm import store as repository
from services.llm.api import new_job
from services.llm.models import GenerateRequest
from services.llm.runtime import LlmRuntime
from services.llm.tasks import JobProgress, catalog_runtime, register_tasks, run_job

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
    app = create_app(settings, plugins=INSTALLED_SERVICES)
    with TestClient(app=app) as test_client:
        record_heartbeat(app.state.platform.store, "test-worker")
        yield test_client
        runtime = app.state.get("llm_runtime")
        if isinstance(runtime, LlmRuntime):
            runtime.close()


def _work(client: TestClient) -> int:  # type: ignore[type-arg]
    """What ``hygie worker`` does: take each queued message from the real queue file and
    run it, with a worker-side huey and runtime of its own (not the API's)."""
    platform = client.app.state.platform
    huey = create_huey(platform.settings)
    register_tasks(huey, platform)
    done = 0
    while (message := huey.dequeue()) is not None:
        huey.execute(message)
        done += 1
    return done


def test_generate_queues_a_job_the_worker_runs_with_the_real_smollm2(
    llm_client: TestClient,  # type: ignore[type-arg]
    auth: dict[str, str],
) -> None:
    response = llm_client.post("/api/v1/llm/generate", json=BODY, headers=auth)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["generation"] is None
    assert response.headers["location"] == f"/api/v1/llm/jobs/{job['id']}"
    polled = llm_client.get(f"/api/v1/llm/jobs/{job['id']}", headers=auth).json()
    assert polled["status"] == "queued"  # nothing ran inside the request
    assert _work(llm_client) == 1
    assert _work(llm_client) == 0
    finished = llm_client.get(f"/api/v1/llm/jobs/{job['id']}", headers=auth).json()
    assert finished["status"] == "done", finished
    body = finished["generation"]
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
    generated = [e for e in audit.entries() if e.object_type == "llm_generation"]
    assert [(e.action, e.object_id) for e in generated] == [
        ("generate", body["id"]),
        ("read", body["id"]),
    ]
    assert {e.actor for e in generated} == {"user-test"}  # the caller's, not the worker's
    queued = [e.action for e in audit.entries() if e.object_type == "llm_job"]
    assert queued == ["queue", "read", "read"]
    assert "ramipril" not in msgspec.json.encode(audit.entries()).decode().lower()
    # The events stream of a finished job ends at once with the job view.
    with llm_client.stream("GET", f"/api/v1/llm/jobs/{job['id']}/events", headers=auth) as events:
        assert events.status_code == 200
        text = "".join(events.iter_text())
    assert "data: done" in text
    assert "event: done" in text
    assert body["id"] in text
    assert repository.get_progress(llm_client.app.state.platform.store, job["id"]) is None


def test_events_stream_the_running_text_then_the_validated_job(
    llm_client: TestClient,  # type: ignore[type-arg]
    auth: dict[str, str],
) -> None:
    """What the worker's progress writer leaves in the store comes out as ``attempt`` and
    ``token`` events while the job runs, then ``done``."""
    platform = llm_client.app.state.platform
    store = platform.store
    ctx = RequestContext(actor="user-test", role="admin", client_addr="local", request_id="r2")
    job = new_job(ctx, kind="generate", generate=msgspec.convert(BODY, GenerateRequest))
    created = repository.create_job(store, job)
    running = repository.update_job(store, created, status="running")

    def worker() -> None:
        progress = JobProgress(store, job.id, interval_s=0)
        progress.start("SmolLM2-135M-Instruct")
        for piece in ('{"texte": ', '"Bonjour', ' Madame"}'):
            time.sleep(0.3)
            progress.piece(piece)
        time.sleep(0.3)
        repository.clear_progress(store, job.id)
        repository.update_job(store, running, status="failed", error="stopped by the test")

    thread = threading.Thread(target=worker)
    thread.start()
    with llm_client.stream("GET", f"/api/v1/llm/jobs/{job.id}/events", headers=auth) as events:
        text = "".join(events.iter_text())
    thread.join()
    tokens = re.findall(r"event: token\r?\ndata: ([^\r\n]*)", text)
    assert "".join(tokens) == '{"texte": "Bonjour Madame"}'
    assert "event: attempt" in text
    assert text.index("data: running") < text.index("event: token") < text.index("event: done")
    assert "stopped by the test" in text


def test_a_job_that_cannot_run_ends_failed_with_its_reason(
    llm_client: TestClient,  # type: ignore[type-arg]
    auth: dict[str, str],
) -> None:
    platform = llm_client.app.state.platform
    ctx = RequestContext(actor="user-test", role="admin", client_addr="local", request_id="r1")
    job = new_job(
        ctx,
        kind="generate",
        generate=msgspec.convert({**BODY, "models": ["absent-model"]}, GenerateRequest),
    )
    repository.create_job(platform.store, job)
    runtime = LlmRuntime(platform.settings)
    ended = run_job(runtime, platform.store, platform.audit, job.id)
    assert ended is not None
    assert ended.status == "failed"
    assert "absent-model" in (ended.error or "")
    assert run_job(runtime, platform.store, platform.audit, job.id) is None  # taken once
    view = llm_client.get(f"/api/v1/llm/jobs/{job.id}", headers=auth).json()
    assert view["status"] == "failed"
    missing = llm_client.get("/api/v1/llm/jobs/job-" + "0" * 32, headers=auth)
    assert missing.status_code == 404


def test_models_are_listed_registered_by_the_worker_and_removed(
    llm_client: TestClient,  # type: ignore[type-arg]
    auth: dict[str, str],
    token_for: Any,
) -> None:
    models = llm_client.get("/api/v1/llm/models", headers=auth).json()
    embedded = next(m for m in models if m["name"] == "SmolLM2-135M-Instruct")
    assert embedded["present"]
    folder = llm_client.app.state.platform.settings.llm_models_path
    folder.mkdir(parents=True, exist_ok=True)
    # Registration hashes the bytes, it does not load them: a small file stands for weights.
    weights = folder / "copied.gguf"
    weights.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (folder / "escape.gguf").symlink_to(Path(embedded_model_path() or "/"))
    reader = {"Authorization": f"Bearer {token_for('llm:read')}"}
    denied = llm_client.post("/api/v1/llm/models", json={"path": "copied.gguf"}, headers=reader)
    assert denied.status_code == 403
    for path, status in (
        ("../../etc/passwd", 400),
        ("absent.gguf", 404),
        (".", 400),
        ("escape.gguf", 400),  # a link out of the folder
    ):
        refused = llm_client.post("/api/v1/llm/models", json={"path": path}, headers=auth)
        assert refused.status_code == status, (path, refused.text)
    queued = llm_client.post(
        "/api/v1/llm/models",
        json={"path": "copied.gguf", "name": "copie", "sha256": digest},
        headers=auth,
    )
    assert queued.status_code == 202, queued.text
    assert _work(llm_client) == 1
    done = llm_client.get(f"/api/v1/llm/jobs/{queued.json()['id']}", headers=auth).json()
    assert done["status"] == "done", done
    assert done["model"]["name"] == "copie"
    assert done["model"]["sha256"] == digest
    wrong = llm_client.post(
        "/api/v1/llm/models",
        json={"path": "copied.gguf", "name": "faux", "sha256": "0" * 64},
        headers=auth,
    )
    assert _work(llm_client) == 1
    failed = llm_client.get(f"/api/v1/llm/jobs/{wrong.json()['id']}", headers=auth).json()
    assert failed["status"] == "failed"
    assert "checksum mismatch" in failed["error"]
    assert llm_client.delete("/api/v1/llm/models/copie", headers=auth).status_code == 204
    assert llm_client.delete("/api/v1/llm/models/copie", headers=auth).status_code == 404
    embedded_gone = llm_client.delete("/api/v1/llm/models/SmolLM2-135M-Instruct", headers=auth)
    assert embedded_gone.status_code == 404


def test_grounding_accepts_catalog_drugs_only(platform: Platform) -> None:
    from click.testing import CliRunner

    from appliance.cli import main

    fixture = Path(__file__).resolve().parent / "fixtures" / "bdpm-mini"
    result = CliRunner().invoke(main, ["catalog", "import", str(fixture)])
    assert result.exit_code == 0, result.output
    runtime = catalog_runtime(platform)
    assert runtime.catalog is not None
    assert runtime.catalog("paracetamol")
    assert runtime.catalog("doliprane")
    assert not runtime.catalog("inventolol")
    assert not runtime.catalog("")


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
