"""Encryption of backup files: a key from a recovery passphrase (scrypt) or a key file, and
AES-256-GCM over fixed-size chunks.

Why chunks: a pharmacy's databases and documents may not fit in memory. Each chunk has its
own tag; its nonce is a random prefix plus the chunk counter, and its associated data binds
the file header, the counter and a "last chunk" flag, so reordering, dropping or truncating
chunks fails authentication (the STREAM construction of Hoang, Reyhanitabar, Rogaway and
Vizár).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"HYGIEBK1"
CHUNK = 1024 * 1024
KEY_BYTES = 32
MIN_PASSPHRASE = 12


class BackupCryptoError(ValueError):
    """Wrong passphrase or key, or a damaged or truncated file (the message says which)."""


@dataclass(frozen=True)
class KeySource:
    """Either a passphrase or a raw key (from the key file)."""

    passphrase: str | None = None
    key: bytes | None = None

    def derive(self, kdf: dict[str, Any]) -> bytes:
        if kdf["name"] == "scrypt":
            if self.passphrase is None:
                raise BackupCryptoError(
                    "cette sauvegarde est protégée par une phrase de récupération"
                )
            return Scrypt(
                salt=bytes.fromhex(kdf["salt"]),
                length=KEY_BYTES,
                n=2 ** int(kdf["log2_n"]),
                r=int(kdf["r"]),
                p=int(kdf["p"]),
            ).derive(self.passphrase.encode("utf-8"))
        if kdf["name"] == "keyfile":
            if self.key is None:
                raise BackupCryptoError("cette sauvegarde est protégée par un fichier de clé")
            return self.key
        raise BackupCryptoError(f"unknown key derivation {kdf['name']!r}")


def new_kdf(source: KeySource, log2_n: int) -> dict[str, Any]:
    if source.passphrase is not None:
        if len(source.passphrase) < MIN_PASSPHRASE:
            raise BackupCryptoError(
                f"la phrase de récupération doit compter au moins {MIN_PASSPHRASE} caractères"
            )
        return {"name": "scrypt", "salt": os.urandom(16).hex(), "log2_n": log2_n, "r": 8, "p": 1}
    if source.key is None or len(source.key) != KEY_BYTES:
        raise BackupCryptoError("a backup key file holds 256 bits (64 hex characters)")
    return {"name": "keyfile"}


def _aad(header: bytes, index: int, last: bool) -> bytes:
    return header + struct.pack(">Q?", index, last)


def write_encrypted(
    out: BinaryIO, plain: BinaryIO, key: bytes, header_fields: dict[str, Any]
) -> None:
    """Write MAGIC, the JSON header (clear, authenticated) and the encrypted chunks."""
    prefix = os.urandom(4)
    header = json.dumps(
        {**header_fields, "nonce_prefix": prefix.hex(), "chunk": CHUNK}, sort_keys=True
    ).encode()
    out.write(MAGIC + struct.pack(">I", len(header)) + header)
    aead = AESGCM(key)
    index = 0
    current = plain.read(CHUNK)
    while True:
        following = plain.read(CHUNK)
        last = not following
        nonce = prefix + struct.pack(">Q", index)
        sealed = aead.encrypt(nonce, current, _aad(header, index, last))
        out.write(struct.pack(">I", len(sealed)) + sealed)
        if last:
            return
        current, index = following, index + 1


def read_header(stream: BinaryIO) -> tuple[dict[str, Any], bytes]:
    if stream.read(len(MAGIC)) != MAGIC:
        raise BackupCryptoError("ce fichier n'est pas une sauvegarde Hygie")
    (length,) = struct.unpack(">I", stream.read(4))
    if length > 65536:
        raise BackupCryptoError("en-tête de sauvegarde invalide")
    raw = stream.read(length)
    try:
        return json.loads(raw), raw
    except ValueError as exc:
        raise BackupCryptoError("en-tête de sauvegarde illisible") from exc


def decrypt_chunks(stream: BinaryIO, key: bytes, header: bytes) -> Iterator[bytes]:
    """Yield plaintext chunks; raise on a wrong key, a damaged or a truncated file."""
    fields = json.loads(header)
    prefix = bytes.fromhex(fields["nonce_prefix"])
    aead = AESGCM(key)
    index = 0
    while True:
        size_bytes = stream.read(4)
        if len(size_bytes) < 4:
            raise BackupCryptoError("sauvegarde tronquée : la fin du fichier manque")
        (size,) = struct.unpack(">I", size_bytes)
        sealed = stream.read(size)
        nonce = prefix + struct.pack(">Q", index)
        for last in (False, True):
            try:
                plain = aead.decrypt(nonce, sealed, _aad(header, index, last))
            except InvalidTag:
                continue
            yield plain
            if last:
                if stream.read(1):
                    raise BackupCryptoError("données en trop après la fin de la sauvegarde")
                return
            break
        else:
            if index == 0:
                raise BackupCryptoError(
                    "impossible de déchiffrer : phrase ou clé incorrecte, ou fichier endommagé"
                )
            raise BackupCryptoError(f"sauvegarde endommagée (bloc {index})")
        index += 1
