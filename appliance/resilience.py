"""Retry and circuit-breaker policies for calls that leave the process (cloud sync, relays).

Configured once from :class:`Settings` so every service backs off the same way: exponential
backoff with full jitter (tenacity) and a per-remote circuit breaker (purgatory) that stops
hammering a link that is down and lets the counter keep working offline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from appliance.config import Settings

T = TypeVar("T")

CircuitOpenError = OpenedState
"""Raised (by purgatory) when a call is refused because its circuit is open."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    initial_wait_s: float
    max_wait_s: float
    retry_on: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            settings.retry_attempts, settings.retry_initial_wait_s, settings.retry_max_wait_s
        )

    def _kwargs(self) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.attempts),
            "wait": wait_exponential_jitter(multiplier=self.initial_wait_s, max=self.max_wait_s),
            "retry": retry_if_exception_type(self.retry_on),
            "reraise": True,
        }

    def retrying(self) -> Retrying:
        """A tenacity controller for synchronous code: ``for attempt in policy.retrying()``."""
        return Retrying(**self._kwargs())

    async def call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Await ``func()`` until it succeeds or the policy gives up (re-raising the error)."""
        async for attempt in AsyncRetrying(**self._kwargs()):
            with attempt:
                return await func()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


class Breakers:
    """One circuit breaker per remote name, sharing the appliance's thresholds."""

    def __init__(self, threshold: int, ttl_s: float) -> None:
        self._factory = AsyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=ttl_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> Breakers:
        return cls(settings.breaker_threshold, settings.breaker_ttl_s)

    async def call(self, circuit: str, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``func`` through the named breaker; raise :data:`CircuitOpenError` when open."""
        breaker = await self._factory.get_breaker(circuit)
        async with breaker:
            return await func()

    async def state(self, circuit: str) -> str:
        """``closed``, ``opened`` or ``half-opened``, for status pages."""
        breaker = await self._factory.get_breaker(circuit)
        return str(breaker.context.state)
