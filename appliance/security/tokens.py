"""Short-lived JWT access tokens signed with the appliance's rotating Ed25519 key set.

joserfc does the JOSE work; this module only decides the claims. The ``kid`` header picks the
verification key, so tokens signed before a rotation stay valid until they expire.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OKPKey

from appliance.security.principal import Principal

ISSUER = "urn:hygie:appliance"
AUDIENCE = "hygie-api"
ALGORITHM = "Ed25519"


class InvalidTokenError(Exception):
    """The token is malformed, forged, expired or not meant for this API."""


class TokenService:
    """Signs and verifies access tokens with a private JWK set (the newest key signs)."""

    def __init__(self, key_set: KeySet, *, issuer: str = ISSUER) -> None:
        if not key_set.keys:
            raise ValueError("JWT key set is empty")
        self._keys = key_set
        self._signing_key = key_set.keys[-1]
        self.issuer = issuer

    @classmethod
    def from_jwks_json(cls, raw: bytes, *, issuer: str = ISSUER) -> TokenService:
        try:
            data = json.loads(raw)
            keys = [OKPKey.import_key(item) for item in data["keys"]]
        except (ValueError, KeyError, TypeError, JoseError) as exc:
            raise ValueError(f"JWT signing key set is malformed: {exc}") from exc
        return cls(KeySet(keys), issuer=issuer)  # type: ignore[arg-type]

    def public_jwks(self) -> dict[str, Any]:
        """The public half of every key, as served at the JWKS endpoint."""
        return {"keys": [key.as_dict(private=False) for key in self._keys.keys]}

    def issue(
        self,
        *,
        subject: str,
        role: str,
        scopes: Iterable[str],
        ttl_s: int = 300,
        client_id: str = "",
        now: float | None = None,
    ) -> str:
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": subject,
            "role": role,
            "scope": " ".join(sorted(set(scopes))),
            "client_id": client_id,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl_s,
            "jti": secrets.token_urlsafe(16),
        }
        header = {"alg": ALGORITHM, "kid": self._signing_key.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, self._signing_key, algorithms=[ALGORITHM])

    def verify(self, token: str, *, now: float | None = None) -> Principal:
        try:
            decoded = jwt.decode(token, self._keys, algorithms=[ALGORITHM])
            registry = jwt.JWTClaimsRegistry(
                now=int(time.time() if now is None else now),
                leeway=5,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": AUDIENCE},
                sub={"essential": True},
                exp={"essential": True},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidTokenError(f"invalid access token: {exc.__class__.__name__}") from exc
        claims = decoded.claims
        scope = claims.get("scope", "")
        if not isinstance(scope, str) or not isinstance(claims.get("role", ""), str):
            raise InvalidTokenError("invalid access token: malformed claims")
        return Principal(
            subject=str(claims["sub"]),
            role=str(claims.get("role", "")),
            scopes=frozenset(scope.split()),
            client_id=str(claims.get("client_id", "")),
            token_id=str(claims.get("jti", "")),
        )
