"""Wire format and end-to-end encryption of sync batches, shared by the agent and the cloud.

Why deterministic per-entry keys: an agent killed after the cloud stored a batch but before
it recorded the acknowledgement re-sends the same entries, maybe in a differently cut batch.
Deriving each entry's data key and nonce from the tenant key, its sequence and its
idempotency key makes the re-sent ciphertext byte-identical, so the cloud can tell an honest
re-delivery (same content hash: acknowledged, not applied twice) from a forged or corrupted
one (same key, different content: refused and reported). Each data key is used for exactly
one message, so the derived nonce is never reused under a key.

The data key is also stored wrapped (AES key wrap, RFC 3394) under the tenant key, named by
the tenant key's id: whoever holds the tenant key (the pharmacy, through its backup) can
decrypt what the cloud stores after a key rotation; the cloud operator holds ciphertext only.
FSE lots carry their data key a second time, wrapped for the insurance gateway (RSA-OAEP),
so the relay forwards a lot the cloud itself cannot read.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

PROTOCOL_VERSION = 1
TENANT_KEY_BYTES = 32
RELAY_STREAM = "teletransmission"
RELAY_KIND = "fse.lot"
"""Entries of this stream and kind are forwarded by the cloud to the insurance gateway."""
DIGEST_HEADER = "content-digest"
MAX_BATCH_ENTRIES = 5000


class EnvelopeError(ValueError):
    """A batch or entry is malformed, corrupt or cannot be decrypted with this key."""


class WireEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One outbox entry as it travels: routing metadata in clear, the payload sealed."""

    seq: int
    stream: str
    kind: str
    idempotency_key: str
    created_at: str
    nonce: str
    ciphertext: str
    wrapped_key: str
    key_id: str
    content_hash: str
    gateway_key: str | None = None


class Batch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A push: consecutive outbox entries of one tenant, in sequence order."""

    version: int
    tenant: str
    delivery_id: str
    """Fresh per HTTP attempt: a byte-identical replay of one request is detected by it."""
    first_seq: int
    last_seq: int
    entries: list[WireEntry]


class Ack(msgspec.Struct, frozen=True):
    """The cloud's answer once every entry is durably stored (write concern majority)."""

    tenant: str
    acked_through: int
    stored: int
    duplicates: int
    relayed: int = 0


class FeedItem(msgspec.Struct, frozen=True):
    """One item of a tenant's feed (cloud to appliance)."""

    position: int
    remote_id: str
    stream: str
    kind: str
    payload: dict[str, Any]
    created_at: str


class Feed(msgspec.Struct, frozen=True):
    tenant: str
    items: list[FeedItem]
    last_position: int


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise EnvelopeError(f"{what} is not valid base64") from exc


def key_id(tenant_key: bytes) -> str:
    """A public name for a tenant key (never the key): first 16 hex of its SHA-256."""
    return hashlib.sha256(b"hygie-sync-key-id" + tenant_key).hexdigest()[:16]


def _aad(tenant: str, entry_seq: int, stream: str, kind: str, idem: str) -> bytes:
    """Associated data: the ciphertext cannot be moved to another tenant, slot or stream."""
    return json.dumps(
        [PROTOCOL_VERSION, tenant, entry_seq, stream, kind, idem], separators=(",", ":")
    ).encode()


def _derive(tenant_key: bytes, label: str, tenant: str, entry_seq: int, idem: str, n: int) -> bytes:
    info = f"hygie-sync|{label}|{tenant}|{entry_seq}|{idem}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=None, info=info).derive(tenant_key)


def content_hash(tenant: str, entry: WireEntry) -> str:
    """What the cloud compares between deliveries of one idempotency key."""
    digest = hashlib.sha256()
    for part in (
        _aad(tenant, entry.seq, entry.stream, entry.kind, entry.idempotency_key),
        entry.nonce.encode(),
        entry.ciphertext.encode(),
        entry.wrapped_key.encode(),
        entry.key_id.encode(),
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def seal_entry(
    tenant: str,
    tenant_key: bytes,
    *,
    seq: int,
    stream: str,
    kind: str,
    idempotency_key: str,
    created_at: str,
    payload: dict[str, Any],
    gateway_public_key: rsa.RSAPublicKey | None = None,
) -> WireEntry:
    """Encrypt one payload for the tenant (and, for FSE lots, also for the gateway)."""
    if len(tenant_key) != TENANT_KEY_BYTES:
        raise EnvelopeError("the tenant key must be 256 bits")
    data_key = _derive(tenant_key, "data-key", tenant, seq, idempotency_key, 32)
    nonce = _derive(tenant_key, "nonce", tenant, seq, idempotency_key, 12)
    plaintext = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    aad = _aad(tenant, seq, stream, kind, idempotency_key)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, aad)
    gateway_key = None
    if gateway_public_key is not None and stream == RELAY_STREAM and kind == RELAY_KIND:
        gateway_key = b64e(
            gateway_public_key.encrypt(
                data_key,
                padding.OAEP(
                    mgf=padding.MGF1(algorithm=hashes.SHA256()),
                    algorithm=hashes.SHA256(),
                    label=None,
                ),
            )
        )
    entry = WireEntry(
        seq=seq,
        stream=stream,
        kind=kind,
        idempotency_key=idempotency_key,
        created_at=created_at,
        nonce=b64e(nonce),
        ciphertext=b64e(ciphertext),
        wrapped_key=b64e(aes_key_wrap(tenant_key, data_key)),
        key_id=key_id(tenant_key),
        content_hash="",
        gateway_key=gateway_key,
    )
    return msgspec.structs.replace(entry, content_hash=content_hash(tenant, entry))


def _decrypt(data_key: bytes, tenant: str, entry: WireEntry) -> dict[str, Any]:
    aad = _aad(tenant, entry.seq, entry.stream, entry.kind, entry.idempotency_key)
    try:
        plaintext = AESGCM(data_key).decrypt(
            b64d(entry.nonce, "nonce"), b64d(entry.ciphertext, "ciphertext"), aad
        )
    except Exception as exc:  # cryptography raises InvalidTag; any failure means "not ours"
        raise EnvelopeError(f"entry {entry.seq} does not decrypt: corrupt or foreign") from exc
    value = json.loads(plaintext)
    if not isinstance(value, dict):
        raise EnvelopeError(f"entry {entry.seq} is not a JSON object")
    return value


def open_entry(tenant: str, tenant_keys: dict[str, bytes], entry: WireEntry) -> dict[str, Any]:
    """Decrypt an entry with the tenant key named by its ``key_id`` (appliance side)."""
    kek = tenant_keys.get(entry.key_id)
    if kek is None:
        raise EnvelopeError(f"entry {entry.seq} was sealed with an unknown key {entry.key_id}")
    try:
        data_key = aes_key_unwrap(kek, b64d(entry.wrapped_key, "wrapped key"))
    except Exception as exc:
        raise EnvelopeError(f"entry {entry.seq}: the data key does not unwrap") from exc
    return _decrypt(data_key, tenant, entry)


def open_for_gateway(
    tenant: str, gateway_private_key: rsa.RSAPrivateKey, entry: WireEntry
) -> dict[str, Any]:
    """Decrypt an FSE lot with the gateway's private key (insurance side)."""
    if entry.gateway_key is None:
        raise EnvelopeError(f"entry {entry.seq} was not sealed for the gateway")
    try:
        data_key = gateway_private_key.decrypt(
            b64d(entry.gateway_key, "gateway key"),
            padding.OAEP(
                mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
            ),
        )
    except ValueError as exc:
        raise EnvelopeError(f"entry {entry.seq}: the gateway key does not unwrap") from exc
    return _decrypt(data_key, tenant, entry)


def body_digest(body: bytes) -> str:
    """RFC 9530 ``Content-Digest`` value for ``body``."""
    return f"sha-256=:{b64e(hashlib.sha256(body).digest())}:"


def encode_batch(batch: Batch) -> bytes:
    return msgspec.json.encode(batch)


def check_batch(batch: Batch, tenant: str) -> None:
    """Structural checks the cloud applies before storing anything (no key needed)."""
    if batch.version != PROTOCOL_VERSION:
        raise EnvelopeError(f"unsupported protocol version {batch.version}")
    if batch.tenant != tenant:
        raise EnvelopeError("the batch names another tenant than the client certificate")
    if not batch.entries or len(batch.entries) > MAX_BATCH_ENTRIES:
        raise EnvelopeError(f"a batch holds 1 to {MAX_BATCH_ENTRIES} entries")
    if not 8 <= len(batch.delivery_id) <= 64:
        raise EnvelopeError("delivery_id must be 8 to 64 characters")
    previous = 0
    for entry in batch.entries:
        if entry.seq <= previous:
            raise EnvelopeError("entries must be in strictly increasing sequence order")
        previous = entry.seq
        if not entry.idempotency_key or len(entry.idempotency_key) > 200:
            raise EnvelopeError(f"entry {entry.seq} has an invalid idempotency key")
        if not entry.stream or len(entry.stream) > 64 or not entry.kind or len(entry.kind) > 64:
            raise EnvelopeError(f"entry {entry.seq} has an invalid stream or kind")
        if content_hash(tenant, entry) != entry.content_hash:
            raise EnvelopeError(f"entry {entry.seq} is corrupt (content hash mismatch)")
    if batch.first_seq != batch.entries[0].seq or batch.last_seq != batch.entries[-1].seq:
        raise EnvelopeError("first_seq/last_seq do not match the entries")
