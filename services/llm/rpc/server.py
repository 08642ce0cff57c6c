"""The gRPC server: the same generation path as the REST API (stored, audited, validated).

Callers send ``authorization: Bearer <access token>`` metadata; the token is verified with
the appliance's keys, checked against revocations, and must carry the generation scope.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import msgspec

from appliance.config import Settings
from appliance.dependencies import RequestContext
from appliance.platform import Platform, open_platform
from appliance.security import Principal
from appliance.security.revocation import is_revoked
from appliance.security.tokens import InvalidTokenError
from services.llm.api import SCOPE_GENERATE, run_generation
from services.llm.models import GenerateRequest
from services.llm.rpc import hygie_llm_pb2 as _pb2
from services.llm.rpc import hygie_llm_pb2_grpc as _pb2_grpc
from services.llm.runtime import LlmRuntime, NoModelError
from services.llm.tasks import catalog_runtime

pb2: Any = _pb2
pb2_grpc: Any = _pb2_grpc


def _client_addr(peer: str) -> str:
    # "ipv4:127.0.0.1:5000" or "ipv6:[::1]:5000"
    host = peer.split(":", 1)[-1].rsplit(":", 1)[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "unknown"


class LlmServicer(pb2_grpc.LlmServicer):  # type: ignore[misc]
    def __init__(self, platform: Platform, runtime: LlmRuntime) -> None:
        self.platform = platform
        self.runtime = runtime

    def _principal(self, context: grpc.ServicerContext) -> Principal:
        metadata = dict(context.invocation_metadata())
        header = str(metadata.get("authorization", ""))
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or self.platform.tokens is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bearer token required")
        try:
            assert self.platform.tokens is not None
            principal = self.platform.tokens.verify(token)
        except InvalidTokenError:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
        if is_revoked(self.platform.store, principal):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "token revoked")
        if SCOPE_GENERATE not in principal.scopes:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"scope {SCOPE_GENERATE} required")
        return principal

    @staticmethod
    def _request(message: Any, context: grpc.ServicerContext) -> GenerateRequest:
        try:
            body: dict[str, Any] = json.loads(message.context_json) if message.context_json else {}
            if not isinstance(body, dict):
                raise TypeError("context_json must be an object")
            body.update(task=message.task, patient_id=message.patient_id)
            if message.strategy:
                body["strategy"] = message.strategy
            if message.max_tokens:
                body["max_tokens"] = message.max_tokens
            if message.latency_budget_ms:
                body["latency_budget_ms"] = message.latency_budget_ms
            if message.models:
                body["models"] = list(message.models)
            return msgspec.convert(body, GenerateRequest)
        except (ValueError, TypeError, msgspec.ValidationError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:300])
        raise AssertionError("unreachable")  # pragma: no cover

    def Generate(self, message: Any, context: grpc.ServicerContext) -> Any:
        principal = self._principal(context)
        request = self._request(message, context)
        ctx = RequestContext(
            actor=principal.subject,
            role=principal.role or "none",
            client_addr=_client_addr(context.peer()),
            request_id=uuid.uuid4().hex,
        )
        try:
            record = run_generation(
                self.runtime, self.platform.store, self.platform.audit, ctx, request
            )
        except NoModelError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb2.GenerateReply(
            id=record.id,
            valid=record.valid,
            draft_json=msgspec.json.encode(record.draft).decode() if record.draft else "",
            strategy=record.strategy,
            models=sorted({a.model for a in record.attempts}),
            template_version=record.template_version,
            latency_ms=record.latency_ms,
        )

    def GenerateStream(self, message: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._principal(context)
        request = self._request(message, context)
        try:
            self.runtime.manifests_for(request)
        except NoModelError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        for piece in self.runtime.stream(request):
            yield pb2.Token(text=piece, done=False)
        yield pb2.Token(text="", done=True)

    def Health(self, message: Any, context: grpc.ServicerContext) -> Any:
        present = [view.name for view in self.runtime.views() if view.present]
        return pb2.HealthReply(status="SERVING", models=present)


def create_server(
    platform: Platform,
    runtime: LlmRuntime,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 4,
) -> tuple[grpc.Server, int]:
    """A started-ready (not started) server and the port it bound (``port=0``: any free)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[("grpc.so_reuseport", 0)],  # a taken port is an error, not a shared one
    )
    pb2_grpc.add_LlmServicer_to_server(LlmServicer(platform, runtime), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise OSError(f"cannot bind gRPC on {host}:{port}: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot bind gRPC on {host}:{port}")
    return server, bound


def start_for_settings(settings: Settings, *, host: str, port: int) -> Callable[[], None]:
    """Open the platform, start the gRPC server in background threads; return ``stop``.

    Used by ``hygie serve --grpc PORT``: the server has its own platform connection and its
    own model cache beside the HTTP app's.
    """
    platform = open_platform(settings)
    runtime = catalog_runtime(platform)
    server, bound = create_server(platform, runtime, host=host, port=port)
    server.start()
    print(f"hygie: gRPC (LLM) listening on {host}:{bound}", file=sys.stderr, flush=True)

    def stop() -> None:
        server.stop(grace=5).wait(10)
        runtime.close()
        platform.close()

    return stop
