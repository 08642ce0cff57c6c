"""The sync agent: pushes outbox batches to the cloud and pulls the tenant's feed back.

Exactly-once by construction rather than by luck:

- the push cursor advances only after the cloud's acknowledgement, in one SQLCipher
  transaction, so a crash anywhere re-sends (never skips) what was not acknowledged;
- the cloud upserts each entry under (tenant, idempotency key) and entries are sealed
  deterministically (:mod:`sync.envelope`), so a re-sent entry is recognised and not applied
  twice;
- batches are cut in sequence order from the cursor, so each stream keeps its order;
- feed items are stored in the inbox with their feed position advance in one transaction,
  keyed by their remote id, so a re-pulled page changes nothing.

Transient failures (network, 5xx, 429) are retried with exponential backoff and jitter, then
count towards the circuit breaker; refusals (4xx: corrupt, replayed, unauthorised) are
recorded and stop the run without advancing anything, for an operator to look at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.config import Settings
from appliance.keys import SecretError, read_secret, secret_path
from appliance.outbox import (
    advance_cursor,
    backlog_size,
    cursor_position,
    pending_batch,
    prune_acknowledged,
    receive,
)
from appliance.resilience import Breakers, CircuitOpenError, RetryPolicy
from appliance.store import Store
from sync.envelope import (
    DIGEST_HEADER,
    PROTOCOL_VERSION,
    TENANT_KEY_BYTES,
    Ack,
    Batch,
    EnvelopeError,
    Feed,
    WireEntry,
    body_digest,
    encode_batch,
    key_id,
    seal_entry,
)
from sync.models import RunReport
from sync.server.pki import PkiError, client_ssl_context, tenant_of_pem_file
from sync.store import FEED_CURSOR, put_state

CLIENT_CERT = "sync-client.pem"
CLIENT_KEY = "sync-client.key"
CLOUD_CA = "sync-ca.pem"
TENANT_KEY = "sync-tenant.key"
GATEWAY_KEY = "sync-gateway.pem"
CIRCUIT = "cloud-sync"
FEED_PAGE = 500
KEEP_ACKNOWLEDGED = 10_000


class SyncNotConfigured(Exception):
    """``sync_url`` or one of the sync secrets is missing; the message says which."""


class TransientError(Exception):
    """The cloud answered 5xx or 429: retry later."""


@dataclass(frozen=True)
class SyncConfig:
    url: str
    tenant: str
    tenant_key: bytes
    ssl_context: ssl.SSLContext
    gateway_key: rsa.RSAPublicKey | None
    batch_size: int
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> SyncConfig:
        if not settings.sync_url:
            raise SyncNotConfigured("sync is off: set sync_url (HYGIE_SYNC_URL)")
        paths = {name: secret_path(settings, name) for name in (CLIENT_CERT, CLIENT_KEY, CLOUD_CA)}
        missing = [name for name, path in paths.items() if not path.exists()]
        if missing:
            raise SyncNotConfigured(
                f"sync secrets missing: {', '.join(missing)} (run 'hygie sync enroll')"
            )
        try:
            tenant = tenant_of_pem_file(paths[CLIENT_CERT])
            context = client_ssl_context(paths[CLIENT_CERT], paths[CLIENT_KEY], paths[CLOUD_CA])
        except (PkiError, ValueError, ssl.SSLError, OSError) as exc:
            raise SyncNotConfigured(f"sync client certificate unusable: {exc}") from exc
        gateway = None
        if secret_path(settings, GATEWAY_KEY).exists():
            loaded = serialization.load_pem_public_key(read_secret(settings, GATEWAY_KEY))
            if not isinstance(loaded, rsa.RSAPublicKey):
                raise SyncNotConfigured(f"{GATEWAY_KEY} is not an RSA public key")
            gateway = loaded
        return cls(
            url=settings.sync_url.rstrip("/"),
            tenant=tenant,
            tenant_key=load_tenant_key(settings),
            ssl_context=context,
            gateway_key=gateway,
            batch_size=settings.sync_batch_size,
            timeout_s=settings.sync_timeout_s,
        )


def parse_tenant_keys(raw: bytes) -> list[bytes]:
    """Tenant keys, current first (one hex line each; older lines decrypt older data)."""
    keys = []
    for line in raw.decode("ascii", errors="replace").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            key = bytes.fromhex(text)
        except ValueError as exc:
            raise SecretError(f"{TENANT_KEY} holds a line that is not hexadecimal") from exc
        if len(key) != TENANT_KEY_BYTES:
            raise SecretError(f"{TENANT_KEY} keys must be {TENANT_KEY_BYTES * 8} bits")
        keys.append(key)
    if not keys:
        raise SecretError(f"{TENANT_KEY} holds no key")
    return keys


def load_tenant_key(settings: Settings) -> bytes:
    return parse_tenant_keys(read_secret(settings, TENANT_KEY))[0]


def tenant_keyring(settings: Settings) -> dict[str, bytes]:
    """Every tenant key by id, to decrypt what the cloud stores (restore from the cloud)."""
    return {key_id(k): k for k in parse_tenant_keys(read_secret(settings, TENANT_KEY))}


@contextlib.contextmanager
def single_run(data_dir: Path) -> Iterator[bool]:
    """Yield whether this process got the agent lock (one agent at a time per appliance)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (data_dir / "sync.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SyncAgent:
    """One appliance's link to the cloud; share one instance per process (breaker state)."""

    def __init__(
        self,
        store: Store,
        config: SyncConfig,
        policy: RetryPolicy,
        breakers: Breakers,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.policy = dataclasses.replace(
            policy, retry_on=(httpx.TransportError, TransientError, OSError)
        )
        self.breakers = breakers
        self._transport = transport

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.config.url,
            verify=self.config.ssl_context,
            timeout=self.config.timeout_s,
            transport=self._transport,
        )

    def seal(self, entries: list[Any]) -> Batch:
        """A batch of outbox entries, each sealed for the tenant (and FSE lots for the gateway)."""
        sealed: list[WireEntry] = [
            seal_entry(
                self.config.tenant,
                self.config.tenant_key,
                seq=e.seq,
                stream=e.stream,
                kind=e.kind,
                idempotency_key=e.idempotency_key,
                created_at=e.created_at,
                payload=e.payload,
                gateway_public_key=self.config.gateway_key,
            )
            for e in entries
        ]
        return Batch(
            version=PROTOCOL_VERSION,
            tenant=self.config.tenant,
            delivery_id=uuid.uuid4().hex,
            first_seq=sealed[0].seq,
            last_seq=sealed[-1].seq,
            entries=sealed,
        )

    async def _send(self, client: httpx.AsyncClient, batch: Batch) -> Ack | str:
        """One HTTP attempt; a fresh delivery id each time. ``str``: the cloud's refusal."""
        attempt = msgspec.structs.replace(batch, delivery_id=uuid.uuid4().hex)
        body = encode_batch(attempt)
        response = await client.post(
            "/v1/batches",
            content=body,
            headers={"content-type": "application/json", DIGEST_HEADER: body_digest(body)},
        )
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"cloud answered {response.status_code}")
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text[:300]}"
        ack = msgspec.json.decode(response.content, type=Ack)
        if ack.tenant != batch.tenant or ack.acked_through != batch.last_seq:
            return f"acknowledgement does not match the batch ({ack.acked_through})"
        return ack

    async def _guarded(self, func: Any) -> Any:
        return await self.breakers.call(CIRCUIT, lambda: self.policy.call(func))

    async def push(self, client: httpx.AsyncClient, max_batches: int | None = None) -> RunReport:
        pushed = batches = duplicates = 0
        while max_batches is None or batches < max_batches:
            entries = pending_batch(self.store.db, limit=self.config.batch_size)
            if not entries:
                break
            batch = self.seal(entries)
            result = await self._guarded(lambda b=batch: self._send(client, b))
            if isinstance(result, str):
                put_state(self.store, last_refusal=f"{_now()} {result}")
                return RunReport(
                    pushed, batches, duplicates, 0, self._backlog(), False, refused=result
                )
            with self.store.write() as db:
                # The cursor only moves forward and only after the cloud's durable ack.
                advance_cursor(db, result.acked_through)
            pushed += result.stored
            duplicates += result.duplicates
            batches += 1
        return RunReport(pushed, batches, duplicates, 0, self._backlog(), True)

    async def _page(self, client: httpx.AsyncClient, after: int) -> Feed:
        response = await client.get("/v1/feed", params={"after": after, "limit": FEED_PAGE})
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"cloud answered {response.status_code}")
        response.raise_for_status()
        return msgspec.json.decode(response.content, type=Feed)

    async def pull(self, client: httpx.AsyncClient) -> int:
        """Store new feed items in the inbox; return how many were new."""
        received = 0
        while True:
            after = cursor_position(self.store.db, FEED_CURSOR)
            page = await self._guarded(lambda a=after: self._page(client, a))
            if not page.items:
                return received
            previous = after
            for item in page.items:
                if item.position <= previous:
                    raise EnvelopeError(f"feed out of order at position {item.position}")
                previous = item.position
            with self.store.write() as db:
                for item in page.items:
                    if (
                        receive(
                            db,
                            remote_id=item.remote_id,
                            stream=item.stream,
                            kind=item.kind,
                            payload=item.payload,
                        )
                        is not None
                    ):
                        received += 1
                advance_cursor(db, page.items[-1].position, FEED_CURSOR)
            if len(page.items) < FEED_PAGE:
                return received

    def _backlog(self) -> int:
        return backlog_size(self.store.db)

    async def run(self, *, max_batches: int | None = None) -> RunReport:
        """Push everything pending, then pull the feed; record the outcome for status."""
        put_state(self.store, last_attempt_at=_now())
        error: str | None = None
        report = RunReport(0, 0, 0, 0, self._backlog(), False)
        try:
            async with self._client() as client:
                report = await self.push(client, max_batches)
                if report.ok:
                    received = await self.pull(client)
                    report = msgspec.structs.replace(report, received=received)
        except CircuitOpenError:
            error = "circuit open: the cloud failed repeatedly, waiting before the next try"
        except (
            httpx.HTTPError,
            TransientError,
            OSError,
            EnvelopeError,
            msgspec.DecodeError,
        ) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        breaker = await self.breakers.state(CIRCUIT)
        if error is not None:
            report = msgspec.structs.replace(report, ok=False, error=error, backlog=self._backlog())
            put_state(self.store, last_error=f"{_now()} {error}", breaker=breaker)
        elif report.ok:
            with self.store.write() as db:
                # acknowledged rows are in the cloud; keep a recent tail for inspection
                prune_acknowledged(db, keep_last=KEEP_ACKNOWLEDGED)
            put_state(self.store, last_success_at=_now(), last_error=None, breaker=breaker)
        else:
            put_state(self.store, breaker=breaker)
        return report
