"""Remote fallback: an OpenAI-compatible ``/v1/chat/completions`` endpoint over httpx.

Off by default (``llm_remote_enabled``). Calls go through the appliance's retry policy and a
circuit breaker named ``llm-remote``, so a dead link is not hammered and the counter keeps
working on local models. Only pseudonymised text leaves: the prompts carry the structured
context (drugs, doses, findings), never the patient's name or record id, and
:func:`pseudonymise` masks identifiers that free text could hold (NIR/INS, phone numbers,
e-mail addresses, dates).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Sequence
from typing import Any

import httpx

from appliance.resilience import Breakers, RetryPolicy
from models.loaders import GenerationParams, RawGeneration

CIRCUIT = "llm-remote"

_MASKS = (
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[courriel]"),
    (re.compile(r"\b[12]\s?\d{2}\s?\d{2}\s?\d{2}\s?\d{3}\s?\d{3}(?:\s?\d{2})?\b"), "[nir]"),
    (re.compile(r"(?:\+33\s?|\b0)[1-9](?:[\s.-]?\d{2}){4}\b"), "[téléphone]"),
    (re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b"), "[date]"),
)


def pseudonymise(text: str) -> str:
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text


class RemoteError(Exception):
    """The endpoint answered, but not with a usable completion."""


class RemoteEndpoint:
    """Synchronous facade (the orchestrator runs in a worker thread) over async httpx."""

    def __init__(
        self,
        url: str,
        *,
        model: str,
        retry: RetryPolicy,
        breakers: Breakers,
        timeout_s: float = 30.0,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.retry = dataclasses.replace(
            retry, retry_on=(httpx.TransportError, httpx.HTTPStatusError, TimeoutError)
        )
        self.breakers = breakers
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport

    def payload(
        self,
        messages: Sequence[dict[str, str]],
        params: GenerationParams,
        schema: dict[str, Any] | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": m["role"], "content": pseudonymise(m["content"])} for m in messages
            ],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        if schema is not None:
            body["response_format"] = {"type": "json_object", "schema": schema}
        return body

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        async with httpx.AsyncClient(
            timeout=self.timeout_s, transport=self._transport, headers=self._headers
        ) as client:
            response = await client.post(f"{self.url}/v1/chat/completions", json=body)
            if response.status_code >= 500 or response.status_code == 429:
                response.raise_for_status()
            if response.status_code >= 400:
                raise RemoteError(f"remote endpoint refused the request ({response.status_code})")
            data: dict[str, Any] = response.json()
            return data

    async def agenerate(
        self,
        messages: Sequence[dict[str, str]],
        params: GenerationParams,
        schema: dict[str, Any] | None = None,
    ) -> RawGeneration:
        body = self.payload(messages, params, schema)
        start = time.perf_counter()
        data = await self.breakers.call(CIRCUIT, lambda: self.retry.call(lambda: self._post(body)))
        total = time.perf_counter() - start
        try:
            text = data["choices"][0]["message"]["content"] or ""
            usage = data.get("usage") or {}
        except (KeyError, IndexError, TypeError) as exc:
            raise RemoteError("remote endpoint answered without a completion") from exc
        return RawGeneration(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            first_token_s=total,
            total_s=total,
        )

    def generate(
        self,
        messages: Sequence[dict[str, str]],
        params: GenerationParams,
        schema: dict[str, Any] | None = None,
    ) -> RawGeneration:
        return asyncio.run(self.agenerate(messages, params, schema))
