"""Password, PIN and client-secret hashing with argon2id (argon2-cffi).

Parameters come from the settings (RFC 9106's low-memory profile by default: 3 passes over
64 MiB, 4 lanes), so tests can hash cheaply and a stronger box can raise them; hashes made
under older parameters are upgraded at the next successful login.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appliance.config import Settings

_SENTINEL = secrets.token_urlsafe(24)


class Hasher:
    """argon2id hashing with the appliance's parameters."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        # Verified when the account does not exist, so that an unknown login takes as long
        # as a wrong password and response times do not reveal which logins exist.
        self._dummy = self._hasher.hash(_SENTINEL)

    @classmethod
    def from_settings(cls, settings: Settings) -> Hasher:
        key = (settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
        cached = _CACHE.get(key)
        if cached is None:
            cached = _CACHE[key] = cls(time_cost=key[0], memory_kib=key[1], parallelism=key[2])
        return cached

    def hash(self, secret: str) -> str:
        return self._hasher.hash(secret)

    def verify(self, stored: str | None, secret: str) -> bool:
        """Constant work whether or not ``stored`` exists; never raises on a bad hash."""
        try:
            return self._hasher.verify(stored or self._dummy, secret) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored)
        except (InvalidHashError, ValueError):
            return True


_CACHE: dict[tuple[int, int, int], Hasher] = {}
