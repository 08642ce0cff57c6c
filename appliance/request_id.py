"""Request ids: the caller's ``X-Request-ID`` when well-formed, else a fresh one.

One function serves the middleware and the error handlers, because errors raised before
routing (404, 405) never reach route middleware but must still be traceable.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.-]{8,64}$")


def request_id_for(scope: Any) -> str:
    """The request id stored in ``scope['state']``, assigning one on first use."""
    state = scope.setdefault("state", {})
    existing = state.get("request_id")
    if isinstance(existing, str):
        return existing
    headers = dict(scope.get("headers", []))
    incoming = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
    request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    state["request_id"] = request_id
    return request_id
