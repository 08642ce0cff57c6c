"""Secrets of the appliance: where they live, how they are created and read.

Secrets are looked up first in ``$CREDENTIALS_DIRECTORY`` (systemd credentials, possibly
TPM-sealed, readable only by the running unit) and then in the root-only key directory, so
that in production the key is never a plain file next to the data it protects.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.config import Settings

MASTER_KEY = "master.key"
AUDIT_SIGNING_KEY = "audit-signing.pem"
JWT_SIGNING_KEYS = "jwt-signing.json"
FIELD_KEY = "field.key"
"""Key of the field-level encryption (appliance.fieldcrypto), separate from the master key."""
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
MASTER_KEY_BYTES = 32


class SecretError(Exception):
    """A secret is missing, unreadable or malformed; the message names which and where."""


def secret_path(settings: Settings, name: str) -> Path:
    """Path of a secret: the systemd credential when present, else the key directory."""
    credentials = os.environ.get(CREDENTIALS_ENV)
    if credentials:
        candidate = Path(credentials) / name
        if candidate.exists():
            return candidate
    return settings.key_path / name


def read_secret(settings: Settings, name: str) -> bytes:
    path = secret_path(settings, name)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise SecretError(
            f"secret '{name}' not found at {path}: run 'hygie keys init' (as root in production)"
        ) from exc
    except PermissionError as exc:
        raise SecretError(f"secret '{name}' at {path} is not readable by this user") from exc


def parse_master_key(raw: bytes, origin: str) -> bytes:
    text = raw.decode("ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise SecretError(f"master key at {origin} is not hexadecimal") from exc
    if len(key) != MASTER_KEY_BYTES:
        raise SecretError(
            f"master key at {origin} has {len(key) * 8} bits, expected {MASTER_KEY_BYTES * 8}"
        )
    return key


def load_master_key(settings: Settings) -> bytes:
    return parse_master_key(
        read_secret(settings, MASTER_KEY), str(secret_path(settings, MASTER_KEY))
    )


def derive_key(master_key: bytes, purpose: str) -> bytes:
    """Derive an independent 256-bit key per use, so one database key never opens another."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"hygie:{purpose}".encode()
    ).derive(master_key)


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600, so a crash never leaves half a key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def new_master_key_text() -> bytes:
    return secrets.token_hex(MASTER_KEY_BYTES).encode() + b"\n"


def new_audit_signing_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_jwt_key_set() -> bytes:
    """A private JWK set with one Ed25519 signing key; rotation appends keys (identity issue)."""
    from joserfc.jwk import OKPKey

    key = OKPKey.generate_key("Ed25519", auto_kid=True)
    jwk = key.as_dict(private=True)
    jwk["use"] = "sig"
    jwk["alg"] = "Ed25519"
    return json.dumps({"keys": [jwk]}, indent=2).encode() + b"\n"


SECRET_FACTORIES = {
    MASTER_KEY: new_master_key_text,
    AUDIT_SIGNING_KEY: new_audit_signing_key_pem,
    JWT_SIGNING_KEYS: new_jwt_key_set,
    # Same shape as the master key (256 bits, hex) but independent of it: see fieldcrypto.
    FIELD_KEY: new_master_key_text,
}


def init_secrets(settings: Settings) -> list[Path]:
    """Create every missing secret in the key directory; never overwrite an existing one."""
    settings.key_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(settings.key_path, 0o700)
    created = []
    for name, factory in SECRET_FACTORIES.items():
        path = settings.key_path / name
        if not path.exists():
            write_secret(path, factory())
            created.append(path)
    return created
