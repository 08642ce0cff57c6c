"""The appliance's Ed25519 audit key: loading it, naming it, signing and checking checkpoints.

The key is separate from the database key on purpose: someone who can open the audit
database can rewrite and re-hash entries, but cannot sign a checkpoint over the result.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from appliance.config import Settings
from appliance.keys import AUDIT_SIGNING_KEY, SecretError, read_secret, secret_path

KEY_ID_LENGTH = 16


def parse_signing_key(pem: bytes, origin: str) -> Ed25519PrivateKey:
    """Parse a PKCS#8 PEM Ed25519 private key; ``origin`` only serves the error message."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # The parser's own message may quote key material: do not chain it into logs.
        raise SecretError(
            f"audit signing key at {origin} is not an unencrypted PEM private key: "
            "restore it from backup (a new key cannot vouch for past checkpoints)"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SecretError(f"audit signing key at {origin} is not an Ed25519 key")
    return key


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The appliance's audit signing key, from systemd credentials or the key directory."""
    raw = read_secret(settings, AUDIT_SIGNING_KEY)
    return parse_signing_key(raw, str(secret_path(settings, AUDIT_SIGNING_KEY)))


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a key, so a checkpoint says which key signed it."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_LENGTH]


def sign(private_key: Ed25519PrivateKey, message: bytes) -> str:
    """Hex Ed25519 signature, the form stored next to the audit rows."""
    return private_key.sign(message).hex()


def signature_valid(public_key: Ed25519PublicKey, signature_hex: object, message: bytes) -> bool:
    """Whether ``signature_hex`` signs ``message``; never raises, rows may be garbage."""
    if not isinstance(signature_hex, str):
        return False
    try:
        public_key.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True
