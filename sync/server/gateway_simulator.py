"""SIMULATED insurance gateway (no real Assurance Maladie endpoint is reachable or used).

Why it exists: the teletransmission relay needs a counterpart that accepts FSE lots and
answers with an acknowledgement (ARL) and a payment return, so that the round trip
appliance → cloud → gateway → cloud → appliance is exercised with real HTTP and real
decryption. It decrypts each lot with its own RSA key (the appliance sealed the lot's data
key for it; the cloud relay cannot read the lot) and answers from the lot's own figures only:
it never invents an amount. A lot without a ``lot_id`` is rejected (negative ARL); the
payment return repeats ``total_amount_cents`` when the lot carries one, else ``null``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Litestar, post
from litestar.exceptions import HTTPException

from sync.envelope import EnvelopeError, WireEntry, open_for_gateway

SIMULATOR_NAME = "hygie-insurance-gateway-simulator"


class RelayedLot(msgspec.Struct, frozen=True):
    tenant: str
    entry: WireEntry


class GatewayAnswer(msgspec.Struct, frozen=True):
    gateway: str
    lot_id: str | None
    status: str
    """``accepted`` (positive ARL) or ``rejected`` (negative ARL)."""
    reason: str | None
    payment: dict[str, Any] | None


def new_gateway_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def answer_lot(key: rsa.RSAPrivateKey, lot: RelayedLot) -> GatewayAnswer:
    """Decrypt one lot and answer as the simulated gateway would."""
    try:
        payload = open_for_gateway(lot.tenant, key, lot.entry)
    except EnvelopeError as exc:
        return GatewayAnswer(SIMULATOR_NAME, None, "rejected", str(exc), None)
    lot_id = payload.get("lot_id")
    if not isinstance(lot_id, str) or not lot_id:
        return GatewayAnswer(SIMULATOR_NAME, None, "rejected", "lot without lot_id", None)
    amount = payload.get("total_amount_cents")
    payment = {
        "lot_id": lot_id,
        "amount_cents": amount
        if isinstance(amount, int) and not isinstance(amount, bool)
        else None,
        "paid_on": dt.datetime.now(dt.UTC).date().isoformat(),
        "simulated": True,
    }
    return GatewayAnswer(SIMULATOR_NAME, lot_id, "accepted", None, payment)


def create_gateway_app(key: rsa.RSAPrivateKey) -> Litestar:
    """The simulator as an HTTP service (``POST /lots``)."""

    @post("/lots", status_code=200, sync_to_thread=False)
    def receive_lot(data: RelayedLot) -> GatewayAnswer:
        if not data.tenant:
            raise HTTPException(status_code=400, detail="tenant missing")
        return answer_lot(key, data)

    return Litestar(route_handlers=[receive_lot], openapi_config=None)
