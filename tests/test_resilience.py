"""Retry with backoff and the circuit breaker, configured from settings."""

from __future__ import annotations

import asyncio

import pytest

from appliance.config import load_settings
from appliance.resilience import Breakers, CircuitOpenError, RetryPolicy


def test_policies_come_from_settings() -> None:
    settings = load_settings({"HYGIE_RETRY_ATTEMPTS": "7", "HYGIE_BREAKER_THRESHOLD": "2"})
    assert RetryPolicy.from_settings(settings).attempts == 7
    assert isinstance(Breakers.from_settings(settings), Breakers)


def test_retry_recovers_from_transient_errors() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("link down")
        return "ok"

    policy = RetryPolicy(attempts=5, initial_wait_s=0.001, max_wait_s=0.01)
    assert asyncio.run(policy.call(flaky)) == "ok"
    assert calls == 3


def test_retry_gives_up_and_reraises() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError("no answer")

    policy = RetryPolicy(attempts=3, initial_wait_s=0.001, max_wait_s=0.01)
    with pytest.raises(TimeoutError):
        asyncio.run(policy.call(down))
    assert calls == 3


def test_retry_does_not_retry_programming_errors() -> None:
    calls = 0

    def bug() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad payload")

    policy = RetryPolicy(attempts=5, initial_wait_s=0.001, max_wait_s=0.01)
    with pytest.raises(ValueError, match="bad payload"):
        for attempt in policy.retrying():
            with attempt:
                bug()
    assert calls == 1


def test_breaker_opens_after_threshold_and_recovers() -> None:
    async def scenario() -> list[str]:
        breakers = Breakers(threshold=2, ttl_s=0.2)
        seen = []

        async def fail() -> None:
            raise ConnectionError("down")

        async def succeed() -> str:
            return "ok"

        for _ in range(2):
            with pytest.raises(ConnectionError):
                await breakers.call("cloud", fail)
        seen.append(await breakers.state("cloud"))
        with pytest.raises(CircuitOpenError):
            await breakers.call("cloud", succeed)
        await asyncio.sleep(0.3)
        seen.append(await breakers.call("cloud", succeed))
        seen.append(await breakers.state("cloud"))
        return seen

    assert asyncio.run(scenario()) == ["opened", "ok", "closed"]
