"""Field-level encryption, blind indexes and pseudonyms, under a key separate from the store's.

SQLCipher protects the database file as a whole; anyone holding the master key (an operator
restoring a backup, a debugging session with the domain database open) reads every row. The
most identifying values (NIR, INS, free-text notes) are therefore sealed a second time, field
by field, with AES-256-GCM under ``field.key``, a secret of its own. Three independent keys
are derived from it with HKDF and distinct labels:

* encryption (:class:`FieldCipher`): random 96-bit nonce per value; the associated data
  names the record and the field, so a ciphertext copied to another patient or another
  field fails to decrypt instead of silently showing the wrong person's data;
* blind index (:class:`BlindIndex`): HMAC-SHA256 over a normalised value, so exact search
  by NIR still works without the plaintext being stored;
* pseudonym (:class:`Pseudonymizer`): a stable keyed identifier for analytics and the cloud
  side, reversible only through the appliance's own lookup table.

Ciphertexts carry a version and key-id prefix (``hf1.<key id>.<base64url>``) so that a later
key rotation can keep old keys for reading; a wrong key is reported as such, never turned
into garbage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.config import Settings
from appliance.keys import FIELD_KEY, SecretError, derive_key, read_secret, secret_path

FORMAT_VERSION = "hf1"
"""``hf1``: AES-256-GCM, 96-bit random nonce, 128-bit tag, UTF-8 plaintext."""
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_ID_CHARS = 12

ENCRYPTION_LABEL = "field:aes-256-gcm"
BLIND_INDEX_LABEL = "field:blind-index"
PSEUDONYM_LABEL = "field:pseudonym"
PSEUDONYM_PREFIX = "psn-"


class FieldCryptoError(Exception):
    """A sealed value cannot be opened; the message never contains the value itself."""


class FieldKeyError(FieldCryptoError):
    """The value was sealed under a key this appliance does not hold (wrong ``field.key``)."""


class FieldIntegrityError(FieldCryptoError):
    """The value is malformed, altered, or was moved to another record or field."""


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"field keys must be {KEY_BYTES * 8} bits, got {len(key) * 8}")


def key_id(key: bytes) -> str:
    """A short public name for a key (an HMAC of a constant, so it reveals nothing)."""
    _check_key(key)
    digest = hmac.new(key, b"hygie field key id", hashlib.sha256).hexdigest()
    return digest[:KEY_ID_CHARS]


def _aad_bytes(aad: str | bytes) -> bytes:
    return aad.encode() if isinstance(aad, str) else aad


class FieldCipher:
    """AES-256-GCM for short strings, with associated data that binds a value to its place.

    ``previous`` keys decrypt only: after a rotation, values sealed under an old key stay
    readable until they are rewritten under the current one.
    """

    def __init__(self, key: bytes, *, previous: Iterable[bytes] = ()) -> None:
        _check_key(key)
        self.key_id = key_id(key)
        self._current = AESGCM(key)
        self._keys: dict[str, AESGCM] = {self.key_id: self._current}
        for old in previous:
            self._keys.setdefault(key_id(old), AESGCM(old))

    def encrypt(self, plaintext: str, aad: str | bytes) -> str:
        """Seal ``plaintext``; ``aad`` must be given again, identical, to open it."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, plaintext.encode(), _aad_bytes(aad))
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{FORMAT_VERSION}.{self.key_id}.{body}"

    def decrypt(self, token: str, aad: str | bytes) -> str:
        """Open a value sealed by :meth:`encrypt` (with this key or a ``previous`` one)."""
        version, kid, body = _split(token)
        if version != FORMAT_VERSION:
            raise FieldIntegrityError(f"unknown sealed-value format '{version[:8]}'")
        aead = self._keys.get(kid)
        if aead is None:
            raise FieldKeyError(
                f"value sealed under field key '{kid}', but the configured field key is "
                f"'{self.key_id}': wrong or rotated '{FIELD_KEY}'"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError) as exc:
            raise FieldIntegrityError("sealed value is not valid base64url") from exc
        if len(raw) < NONCE_BYTES + 16:
            raise FieldIntegrityError("sealed value is too short")
        try:
            plain = aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad_bytes(aad))
        except InvalidTag as exc:
            raise FieldIntegrityError(
                "sealed value fails authentication: altered, or moved from another record or field"
            ) from exc
        return plain.decode()

    @staticmethod
    def is_sealed(value: str) -> bool:
        """Whether ``value`` looks like the output of :meth:`encrypt` (used by tests, checks)."""
        return value.startswith(f"{FORMAT_VERSION}.") and value.count(".") == 2


def _split(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise FieldIntegrityError("sealed value is not of the form 'version.keyid.data'")
    return parts[0], parts[1], parts[2]


def normalise_identifier(value: str) -> str:
    """Canonical form of an identifier before indexing: NFKC, no spaces, upper case."""
    text = unicodedata.normalize("NFKC", value)
    return "".join(text.split()).upper()


class BlindIndex:
    """Keyed HMAC-SHA256 of a normalised value: equal inputs match, nothing else leaks.

    Each index has its own ``field`` label inside the MAC, so the NIR index of a value never
    equals its INS index (no cross-field linking from the stored hashes).
    """

    def __init__(
        self, key: bytes, field: str, normalise: Callable[[str], str] = normalise_identifier
    ) -> None:
        _check_key(key)
        self._key = key
        self.field = field
        self._normalise = normalise

    def compute(self, value: str) -> str:
        message = f"{self.field}\x00{self._normalise(value)}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


class Pseudonymizer:
    """Stable keyed pseudonym of an internal id (``psn-`` + 32 base32 characters).

    Derived from the id with HMAC, so it cannot be computed or reversed without the key;
    re-identification is a lookup on the appliance, never a computation elsewhere.
    """

    def __init__(self, key: bytes, namespace: str) -> None:
        _check_key(key)
        self._key = key
        self.namespace = namespace

    def pseudonym(self, internal_id: str) -> str:
        digest = hmac.new(
            self._key, f"{self.namespace}\x00{internal_id}".encode(), hashlib.sha256
        ).digest()
        return PSEUDONYM_PREFIX + base64.b32encode(digest[:20]).decode().lower()


@dataclass(frozen=True)
class FieldKeys:
    """Everything derived from one field secret; build it once per process."""

    root: bytes

    def __post_init__(self) -> None:
        _check_key(self.root)

    @property
    def key_id(self) -> str:
        return key_id(derive_key(self.root, ENCRYPTION_LABEL))

    def cipher(self) -> FieldCipher:
        return FieldCipher(derive_key(self.root, ENCRYPTION_LABEL))

    def blind_index(self, field: str) -> BlindIndex:
        return BlindIndex(derive_key(self.root, f"{BLIND_INDEX_LABEL}:{field}"), field)

    def pseudonymizer(self, namespace: str) -> Pseudonymizer:
        return Pseudonymizer(derive_key(self.root, f"{PSEUDONYM_LABEL}:{namespace}"), namespace)


def parse_field_key(raw: bytes, origin: str) -> bytes:
    text = raw.decode("ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise SecretError(f"field key at {origin} is not hexadecimal") from exc
    if len(key) != KEY_BYTES:
        raise SecretError(f"field key at {origin} has {len(key) * 8} bits, expected 256")
    return key


def load_field_keys(settings: Settings) -> FieldKeys:
    """Read ``field.key`` (systemd credential first, then the key directory)."""
    raw = read_secret(settings, FIELD_KEY)
    return FieldKeys(parse_field_key(raw, str(secret_path(settings, FIELD_KEY))))
