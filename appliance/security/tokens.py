"""Short-lived JWT access tokens and OpenID Connect ID tokens, signed with the appliance's
rotating Ed25519 key set.

joserfc does all the JOSE work (signing, verification, algorithm allow-list, claims
validation); this module only decides the claims. The ``kid`` header picks the verification
key, so tokens signed before a rotation stay valid until they expire, and a token without a
``kid`` or with an unknown one is refused. Only ``Ed25519`` is accepted: ``alg=none``, HMAC
tricks and every other algorithm fail before any claim is read.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OKPKey

from appliance.security.principal import Principal

ISSUER = "urn:hygie:appliance"
AUDIENCE = "hygie-api"
ALGORITHM = "Ed25519"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
LEEWAY_S = 5
_ACCESS_TYPES = frozenset({ACCESS_TOKEN_TYPE, "application/at+jwt"})
# Claims the caller of mint() may not override: they are what verification relies on.
_RESERVED = frozenset({"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "scope", "role"})


class InvalidTokenError(Exception):
    """The token is malformed, forged, expired or not meant for this API."""


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    """A signed access token and what the issuer must remember about it."""

    token: str
    jti: str
    issued_at: int
    expires_at: int


class TokenService:
    """Signs and verifies tokens with a private JWK set (the newest key signs)."""

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

    @property
    def signing_kid(self) -> str:
        return str(self._signing_key.kid)

    def public_jwks(self) -> dict[str, Any]:
        """The public half of every key, as served at the JWKS endpoint."""
        keys = []
        for key in self._keys.keys:
            public = dict(key.as_dict(private=False))
            public.setdefault("use", "sig")
            public.setdefault("alg", ALGORITHM)
            keys.append(public)
        return {"keys": keys}

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
        """A signed access token (see :meth:`mint` for the token and its id)."""
        return self.mint(
            subject=subject, role=role, scopes=scopes, ttl_s=ttl_s, client_id=client_id, now=now
        ).token

    def mint(
        self,
        *,
        subject: str,
        role: str,
        scopes: Iterable[str],
        ttl_s: int = 300,
        client_id: str = "",
        now: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> IssuedToken:
        """Sign an access token (RFC 9068 ``at+jwt``) for ``subject`` with ``scopes``."""
        issued = int(time.time() if now is None else now)
        jti = secrets.token_urlsafe(16)
        claims: dict[str, Any] = {
            key: value for key, value in (extra or {}).items() if key not in _RESERVED
        }
        claims.update(
            {
                "iss": self.issuer,
                "aud": AUDIENCE,
                "sub": subject,
                "role": role,
                "scope": " ".join(sorted(set(scopes))),
                "client_id": client_id,
                "iat": issued,
                "nbf": issued,
                "exp": issued + ttl_s,
                "jti": jti,
            }
        )
        header = {"alg": ALGORITHM, "kid": self.signing_kid, "typ": ACCESS_TOKEN_TYPE}
        token = jwt.encode(header, claims, self._signing_key, algorithms=[ALGORITHM])
        return IssuedToken(token=token, jti=jti, issued_at=issued, expires_at=issued + ttl_s)

    def sign_id_token(
        self,
        *,
        subject: str,
        audience: str,
        ttl_s: int,
        claims: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> str:
        """An OpenID Connect ID token for the client ``audience`` (``typ`` JWT)."""
        issued = int(time.time() if now is None else now)
        body = {key: value for key, value in (claims or {}).items() if key not in _RESERVED}
        body.update(
            {
                "iss": self.issuer,
                "sub": subject,
                "aud": audience,
                "azp": audience,
                "iat": issued,
                "exp": issued + ttl_s,
            }
        )
        header = {"alg": ALGORITHM, "kid": self.signing_kid, "typ": "JWT"}
        return jwt.encode(header, body, self._signing_key, algorithms=[ALGORITHM])

    def decode_claims(
        self, token: str, *, audience: str, now: float | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Header and claims of a token signed by one of our keys for ``audience``.

        Raises :class:`InvalidTokenError` for any signature, algorithm or claims problem.
        """
        try:
            decoded = jwt.decode(token, self._key_for, algorithms=[ALGORITHM])
            registry = jwt.JWTClaimsRegistry(
                now=int(time.time() if now is None else now),
                leeway=LEEWAY_S,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": audience},
                sub={"essential": True},
                exp={"essential": True},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidTokenError(f"invalid token: {exc.__class__.__name__}") from exc
        return dict(decoded.header), dict(decoded.claims)

    def verify(self, token: str, *, now: float | None = None) -> Principal:
        """The principal of a valid access token; :class:`InvalidTokenError` otherwise."""
        header, claims = self.decode_claims(token, audience=AUDIENCE, now=now)
        if str(header.get("typ", "")).lower() not in _ACCESS_TYPES:
            raise InvalidTokenError("invalid access token: not an access token (typ)")
        scope = claims.get("scope", "")
        amr = claims.get("amr", [])
        if (
            not isinstance(scope, str)
            or not isinstance(claims.get("role", ""), str)
            or not isinstance(claims.get("iat", 0), int)
            or not isinstance(amr, list)
        ):
            raise InvalidTokenError("invalid access token: malformed claims")
        return Principal(
            subject=str(claims["sub"]),
            role=str(claims.get("role", "")),
            scopes=frozenset(scope.split()),
            client_id=str(claims.get("client_id", "")),
            token_id=str(claims.get("jti", "")),
            issued_at=int(claims.get("iat", 0)),
            auth_methods=frozenset(str(item) for item in amr),
        )

    def _key_for(self, obj: Any) -> Any:
        kid = obj.headers().get("kid")
        if not isinstance(kid, str) or not kid:
            raise ValueError("token header has no kid")
        return self._keys.get_by_kid(kid)
