"""Rotation of the JWT signing keys (``jwt-signing.json``, a private JWK set).

The newest key signs; older keys stay in the set so that tokens they signed still verify
until they expire (five minutes for access tokens). ``hygie tokens rotate-key`` appends a
fresh Ed25519 key and keeps the newest ``keep`` keys; the server picks the new key up at its
next start.
"""

from __future__ import annotations

import json
from typing import Any

from joserfc.jwk import OKPKey

from appliance.config import Settings
from appliance.keys import JWT_SIGNING_KEYS, SecretError, write_secret
from appliance.security.tokens import ALGORITHM

MIN_KEPT_KEYS = 2


def new_signing_jwk() -> dict[str, Any]:
    key = OKPKey.generate_key("Ed25519", auto_kid=True)
    jwk = dict(key.as_dict(private=True))
    jwk["use"] = "sig"
    jwk["alg"] = ALGORITHM
    return jwk


def rotate_jwt_keys(settings: Settings, *, keep: int = 3) -> tuple[str, list[str]]:
    """Append a new signing key to the key directory's set; returns (new kid, dropped kids)."""
    if keep < MIN_KEPT_KEYS:
        raise ValueError(f"keep at least {MIN_KEPT_KEYS} keys, or live tokens stop verifying")
    path = settings.key_path / JWT_SIGNING_KEYS
    try:
        data = json.loads(path.read_bytes())
        keys = list(data["keys"])
    except FileNotFoundError as exc:
        raise SecretError(f"secret '{JWT_SIGNING_KEYS}' not found at {path}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise SecretError(f"JWT signing key set at {path} is malformed") from exc
    fresh = new_signing_jwk()
    keys.append(fresh)
    dropped = [str(item.get("kid", "")) for item in keys[:-keep]]
    write_secret(path, json.dumps({"keys": keys[-keep:]}, indent=2).encode() + b"\n")
    return str(fresh["kid"]), dropped
