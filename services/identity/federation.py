"""Optional login through an external OpenID provider (Pro Santé Connect, or the
pharmacy's own), as a relying party: authorization code flow with PKCE and a nonce, ID token
verified with the provider's published keys (joserfc), user matched to a local account.

The provider is configured by its issuer URL, a client id and the secret
``oidc-federation-client-secret`` (systemd credential or key directory). A federated login
never creates an account: the person must already have one, found by RPPS number (PSC's
``SubjectNameID`` is ``8`` + RPPS) or by login, as ``federation_match`` says.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from appliance.config import Settings
from appliance.keys import SecretError, read_secret
from appliance.store import Store, Versioned
from services.identity import logic
from services.identity import store as repo
from services.identity.models import User

SECRET_NAME = "oidc-federation-client-secret"  # noqa: S105 - a file name
CALLBACK_PATH = "/oauth/federation/callback"
ALLOWED_ALGORITHMS = ("RS256", "PS256", "ES256", "Ed25519", "EdDSA")
CACHE_TTL_S = 3600.0
HTTP_TIMEOUT_S = 10.0
LEEWAY_S = 30


class FederationError(Exception):
    """The external provider could not be used or gave an unacceptable answer."""


def _issuer_is_acceptable(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.netloc)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def basic_authorization(client_id: str, secret: str) -> str:
    """``client_secret_basic``: both parts form-urlencoded first (RFC 6749 §2.3.1)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[float, dict[str, Any], KeySet]] = {}


_CACHE = _Cache()


class Federation:
    """The configured external provider, or ``enabled`` False."""

    def __init__(self, settings: Settings, *, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self.issuer = (settings.federation_issuer or "").rstrip("/")
        self.client_id = settings.federation_client_id or ""
        self.name = settings.federation_name
        self._http = http

    @property
    def enabled(self) -> bool:
        return bool(self.issuer and self.client_id)

    @property
    def redirect_uri(self) -> str:
        return self.settings.issuer_url + CALLBACK_PATH

    def _client(self) -> httpx.Client:
        return self._http or httpx.Client(timeout=HTTP_TIMEOUT_S, follow_redirects=False)

    def _secret(self) -> str:
        try:
            return read_secret(self.settings, SECRET_NAME).decode("utf-8").strip()
        except (SecretError, UnicodeDecodeError) as exc:
            raise FederationError(f"the client secret '{SECRET_NAME}' is unavailable") from exc

    def _get_json(self, url: str) -> dict[str, Any]:
        client = self._client()
        try:
            response = client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise FederationError(
                f"the provider did not answer ({exc.__class__.__name__})"
            ) from exc
        finally:
            if self._http is None:
                client.close()
        if not isinstance(data, dict):
            raise FederationError("the provider answered something that is not a JSON object")
        return data

    def metadata(self, *, refresh: bool = False) -> tuple[dict[str, Any], KeySet]:
        """Discovery document and signing keys, cached for an hour."""
        if not self.enabled or not _issuer_is_acceptable(self.issuer):
            raise FederationError("no usable external provider is configured")
        now = time.monotonic()
        with _CACHE.lock:
            cached = _CACHE.entries.get(self.issuer)
        if cached and not refresh and now - cached[0] < CACHE_TTL_S:
            return cached[1], cached[2]
        document = self._get_json(self.issuer + "/.well-known/openid-configuration")
        if str(document.get("issuer", "")).rstrip("/") != self.issuer:
            raise FederationError("the provider's discovery document names another issuer")
        for member in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not _issuer_is_acceptable(str(document.get(member, ""))):
                raise FederationError(f"the provider's {member} is missing or not https")
        try:
            keys = KeySet.import_key_set(self._get_json(str(document["jwks_uri"])))  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise FederationError("the provider's JWKS could not be read") from exc
        with _CACHE.lock:
            _CACHE.entries[self.issuer] = (now, document, keys)
        return document, keys

    def authorization_url(self, state: str, nonce: str, verifier: str) -> str:
        document, _ = self.metadata()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.settings.federation_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": logic.pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        endpoint = str(document["authorization_endpoint"])
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"

    def exchange(self, code: str, verifier: str, nonce: str) -> dict[str, Any]:
        """Redeem the code at the provider and return the verified ID token claims."""
        document, keys = self.metadata()
        secret = self._secret()
        methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        if "client_secret_basic" in methods:
            headers["Authorization"] = basic_authorization(self.client_id, secret)
        else:
            form.update({"client_id": self.client_id, "client_secret": secret})
        client = self._client()
        try:
            response = client.post(str(document["token_endpoint"]), data=form, headers=headers)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise FederationError(
                f"the provider's token endpoint failed ({exc.__class__.__name__})"
            ) from exc
        finally:
            if self._http is None:
                client.close()
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise FederationError(
                f"the provider refused the code ({error or response.status_code})"
            )
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise FederationError("the provider returned no ID token")
        return self.verify_id_token(id_token, keys, nonce)

    def verify_id_token(self, id_token: str, keys: KeySet, nonce: str) -> dict[str, Any]:
        try:
            try:
                decoded = jwt.decode(id_token, keys, algorithms=list(ALLOWED_ALGORITHMS))
            except JoseError:
                # The provider may have rotated its keys since they were cached.
                _, keys = self.metadata(refresh=True)
                decoded = jwt.decode(id_token, keys, algorithms=list(ALLOWED_ALGORITHMS))
            jwt.JWTClaimsRegistry(
                leeway=LEEWAY_S,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise FederationError(
                f"the provider's ID token is not acceptable ({exc.__class__.__name__})"
            ) from exc
        return dict(decoded.claims)

    def match_user(self, store: Store, claims: dict[str, Any]) -> Versioned[User] | None:
        """The local account the provider's claims name, if any."""
        value = claims.get(self.settings.federation_claim)
        if not isinstance(value, str) or not value:
            return None
        if self.settings.federation_match == "rpps":
            rpps = logic.rpps_from_national_id(value)
            return repo.find_user(store.db, rpps=rpps) if rpps else None
        return repo.find_user(store.db, username=value.lower())
