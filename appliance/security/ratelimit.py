"""Per-client rate limits: a global one on every route, a tighter one on login and tokens.

A token bucket per client address (capacity ``limit``, refilled at ``limit / window`` per
second) lets a counter terminal burst when a screen loads while capping a sustained flood.
A refused request gets ``429`` with ``Retry-After`` (whole seconds until one more request
fits) as an RFC 9457 problem. Buckets live in the memory of the one server process: a
restart forgets them, which only ever errs towards letting a client in; the per-account
lockout (stored) is what protects passwords over time.

Routes opt into the tight limit with ``opt={"rate_limit": "auth"}``; health probes and
metrics are never limited, so monitoring cannot lock itself out.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

RATE_LIMIT_OPT = "rate_limit"
AUTH_CATEGORY = "auth"
DEFAULT_MAX_KEYS = 10_000
UNLIMITED_PREFIXES = ("/health/", "/metrics")


class RateLimitedError(HTTPException):
    """429 with ``Retry-After``; rendered as a problem of type ``rate-limited``."""

    status_code = 429
    problem_type = "rate-limited"

    def __init__(self, retry_after_s: int, detail: str) -> None:
        super().__init__(
            detail=detail,
            status_code=429,
            headers={"Retry-After": str(retry_after_s)},
            extra={"retry_after": retry_after_s},
        )


class TokenBucketLimiter:
    """``limit`` requests per ``window_s`` and key, with bursts up to ``limit``."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a rate limit needs limit >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._rate = limit / window_s
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Take one request for ``key``: 0.0 if allowed, else the seconds to wait."""
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.pop(key, (float(self.limit), now))
            tokens = min(float(self.limit), tokens + (now - updated) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self._rate
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)  # least recently seen client
        return wait


def client_key(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimitMiddleware(ASGIMiddleware):
    """Apply the global limit to every request and the ``auth`` limit where opted in."""

    scopes = (ScopeType.HTTP,)

    @staticmethod
    def should_bypass_for_scope(scope: Scope) -> bool:
        path = str(scope.get("path", ""))
        return path.startswith(UNLIMITED_PREFIXES)

    def __init__(
        self,
        *,
        per_client: int,
        auth_per_client: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.global_limiter = TokenBucketLimiter(per_client, window_s, clock=clock)
        self.auth_limiter = TokenBucketLimiter(auth_per_client, window_s, clock=clock)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        key = client_key(scope)
        handler: Any = scope.get("route_handler")
        opt = getattr(handler, "opt", None) or {}
        wait = self.global_limiter.hit(key)
        what = "requests"
        if wait == 0.0 and opt.get(RATE_LIMIT_OPT) == AUTH_CATEGORY:
            wait = self.auth_limiter.hit(key)
            what = "login and token requests"
        if wait > 0.0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimitedError(
                retry_after, f"too many {what} from this address; retry in {retry_after} s"
            )
        await next_app(scope, receive, send)
