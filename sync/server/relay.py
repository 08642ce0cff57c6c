"""Teletransmission relay: FSE lots stored by the cloud go to the insurance gateway, and its
acknowledgements and payment returns go back to the pharmacy that sent the lot.

Why idempotent at each step: the relay may crash between the gateway's answer and the
state update; the feed items are keyed by the lot's idempotency key (``remote_id``), so a
re-run appends nothing twice and the pharmacy sees each return once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
import msgspec

from sync.server.gateway_simulator import GatewayAnswer, RelayedLot
from sync.server.storage import CloudStore

log = logging.getLogger("hygie.sync.relay")


@dataclass
class Relay:
    store: CloudStore
    gateway_url: str
    client: httpx.Client

    def run_once(self, limit: int = 100) -> int:
        """Forward pending lots; return how many were answered."""
        done = 0
        for job in self.store.pending_relays(limit):
            tenant, key = str(job["tenant"]), str(job["idempotency_key"])
            entry = self.store.event(tenant, key)
            if entry is None:  # pragma: no cover - the relay row is written after the event
                continue
            if entry.gateway_key is None:
                # Sealed for the tenant only (the box lacks sync-gateway.pem): the insurer could
                # not read it, and a negative ARL would wrongly reject the pharmacy's FSEs.
                self.store.record_incident(
                    tenant,
                    "unsealed-lot",
                    f"lot {key} not sealed for the gateway: install sync-gateway.pem and resend",
                )
                self.store.finish_relay(job["_id"], "unsealed")
                continue
            try:
                response = self.client.post(
                    self.gateway_url.rstrip("/") + "/lots",
                    content=msgspec.json.encode(RelayedLot(tenant=tenant, entry=entry)),
                    headers={"content-type": "application/json"},
                )
                response.raise_for_status()
                answer = msgspec.json.decode(response.content, type=GatewayAnswer)
            except (httpx.HTTPError, msgspec.DecodeError) as exc:
                log.warning("gateway unreachable for %s/%s: %s", tenant, key, exc)
                self.store.count_relay_attempt(job["_id"], str(exc))
                continue
            ack = {
                "lot_ref": key,
                "lot_id": answer.lot_id,
                "status": answer.status,
                "reason": answer.reason,
                "gateway": answer.gateway,
            }
            self.store.append_feed(tenant, f"fse-ack:{key}", "teletransmission", "fse.ack", ack)
            if answer.payment is not None:
                self.store.append_feed(
                    tenant,
                    f"fse-payment:{key}",
                    "teletransmission",
                    "fse.payment",
                    {"lot_ref": key, **answer.payment, "gateway": answer.gateway},
                )
            self.store.finish_relay(job["_id"], answer.status)
            done += 1
        return done
