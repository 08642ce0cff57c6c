"""Web sessions of the counter UI: opaque ids in a cookie, tokens kept on the server.

The browser only ever holds a random session id (``HttpOnly``, ``SameSite=Lax``, ``Secure``
under TLS). The OAuth tokens the id stands for stay in this process's memory, so a stolen
page or a script cannot read them, and a restart of ``hygie serve`` simply ends every web
session (the next click lands on the login page with a message, nothing is lost: every
change was already stored by the API).

A session lives as long as its refresh token: the identity service's idle and absolute
lifetimes (``refresh_token_idle_ttl_s``, ``refresh_token_max_ttl_s``) decide, not this module.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SESSION_COOKIE = "hygie_session"
LOGIN_COOKIE = "hygie_login"
PENDING_TTL_S = 600.0
MAX_SESSIONS = 10_000
MAX_PENDING = 10_000


@dataclass
class WebSession:
    """One signed-in browser: tokens, the CSRF token of its forms, what it displays."""

    session_id: str
    access_token: str
    refresh_token: str | None
    access_expires_at: float
    refresh_expires_at: float
    csrf: str
    user_id: str = ""
    username: str = ""
    display_name: str = ""
    role: str = ""
    role_label: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    scratch: dict[str, Any] = field(default_factory=dict)
    """Per-session working state of multi-step screens (e.g. the analysis review)."""


@dataclass(frozen=True)
class PendingLogin:
    """An authorization request this UI started: PKCE verifier, state, where to go back."""

    state: str
    verifier: str
    next_path: str
    created_at: float


class SessionStore:
    """Thread-safe in-memory map of session ids and pending logins (one server process)."""

    def __init__(self, clock: Any = time.time) -> None:
        self._sessions: dict[str, WebSession] = {}
        self._pending: dict[str, PendingLogin] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def now(self) -> float:
        return float(self._clock())

    # --- pending logins -------------------------------------------------------------------

    def begin_login(self, verifier: str, next_path: str) -> PendingLogin:
        pending = PendingLogin(
            state=secrets.token_urlsafe(24),
            verifier=verifier,
            next_path=next_path,
            created_at=self.now(),
        )
        with self._lock:
            self._purge_pending()
            if len(self._pending) >= MAX_PENDING:
                oldest = min(self._pending.values(), key=lambda p: p.created_at)
                del self._pending[oldest.state]
            self._pending[pending.state] = pending
        return pending

    def take_login(self, state: str) -> PendingLogin | None:
        """The pending login of ``state``, usable once and for ``PENDING_TTL_S`` seconds."""
        with self._lock:
            pending = self._pending.pop(state, None)
        if pending is None or self.now() - pending.created_at > PENDING_TTL_S:
            return None
        return pending

    def _purge_pending(self) -> None:
        limit = self.now() - PENDING_TTL_S
        for key in [k for k, p in self._pending.items() if p.created_at < limit]:
            del self._pending[key]

    # --- sessions ---------------------------------------------------------------------------

    def create(self, tokens: dict[str, Any]) -> WebSession:
        now = self.now()
        session = WebSession(
            session_id=secrets.token_urlsafe(32),
            access_token=str(tokens["access_token"]),
            refresh_token=tokens.get("refresh_token"),
            access_expires_at=now + float(tokens.get("expires_in", 60)),
            refresh_expires_at=now + float(tokens.get("refresh_expires_in", 0)),
            csrf=secrets.token_urlsafe(32),
        )
        with self._lock:
            self._purge_sessions()
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.refresh_expires_at)
                del self._sessions[oldest.session_id]
            self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None) -> WebSession | None:
        if not session_id or len(session_id) > 64:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.refresh_expires_at <= self.now() and session.access_expires_at <= self.now():
            self.drop(session_id)
            return None
        return session

    def update_tokens(self, session: WebSession, tokens: dict[str, Any]) -> None:
        now = self.now()
        session.access_token = str(tokens["access_token"])
        session.refresh_token = tokens.get("refresh_token", session.refresh_token)
        session.access_expires_at = now + float(tokens.get("expires_in", 60))
        if "refresh_expires_in" in tokens:
            session.refresh_expires_at = now + float(tokens["refresh_expires_in"])

    def drop(self, session_id: str) -> WebSession | None:
        with self._lock:
            return self._sessions.pop(session_id, None)

    def _purge_sessions(self) -> None:
        now = self.now()
        for key in [
            k
            for k, s in self._sessions.items()
            if s.refresh_expires_at <= now and s.access_expires_at <= now
        ]:
            del self._sessions[key]
