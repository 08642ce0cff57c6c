"""Client of the online teleservices (ADRi rights, INSi identity, teletransmission).

Every call goes through the appliance's retry policy (exponential backoff with jitter) and a
per-teleservice circuit breaker, so a link that is down costs a few quick failures and then
none while the circuit is open; the caller turns :class:`TeleserviceUnavailable` into an
offline mode (the check is queued, the record marked unchecked). A teleservice whose URL is
not configured is unavailable in the same way.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any, TypeVar

import httpx
import msgspec

from appliance.config import Settings
from appliance.resilience import Breakers, CircuitOpenError, RetryPolicy
from services.sesam_vitale.models import InsiAnswer, RightsAnswer

T = TypeVar("T")


class TeleserviceUnavailable(Exception):
    """The teleservice cannot be reached now (down, timing out, circuit open, not set up)."""


class TeleserviceError(Exception):
    """The teleservice answered, but not with something usable (4xx, unreadable body)."""


class _ServerError(Exception):
    """A 5xx answer: worth retrying, like a transport error."""


class TeleserviceClient:
    """One client per process: it holds the circuit breakers' state."""

    def __init__(
        self,
        *,
        adri_url: str | None,
        insi_url: str | None,
        transmission_url: str | None,
        timeout_s: float,
        retry: RetryPolicy,
        breakers: Breakers,
    ) -> None:
        self.urls = {"adri": adri_url, "insi": insi_url, "transmission": transmission_url}
        self.timeout_s = timeout_s
        self.retry = dataclasses.replace(
            retry, retry_on=(httpx.TransportError, _ServerError, TimeoutError)
        )
        self.breakers = breakers

    @classmethod
    def from_settings(cls, settings: Settings) -> TeleserviceClient:
        return cls(
            adri_url=settings.sesam_adri_url,
            insi_url=settings.sesam_insi_url,
            transmission_url=settings.sesam_transmission_url,
            timeout_s=settings.sesam_timeout_s,
            retry=RetryPolicy.from_settings(settings),
            breakers=Breakers.from_settings(settings),
        )

    async def _call(
        self, service: str, method: str, path: str, json_body: dict[str, Any] | None
    ) -> httpx.Response:
        base = self.urls[service]
        if not base:
            raise TeleserviceUnavailable(f"{service}: no URL configured")
        url = base.rstrip("/") + path

        async def once() -> httpx.Response:
            async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                response = await http.request(method, url, json=json_body)
            if response.status_code >= 500:
                raise _ServerError(f"{service}: HTTP {response.status_code}")
            return response

        async def guarded() -> httpx.Response:
            return await self.breakers.call(f"sesam-{service}", once)

        try:
            response = await self.retry.call(guarded)
        except CircuitOpenError as exc:
            raise TeleserviceUnavailable(
                f"{service}: circuit open after repeated failures"
            ) from exc
        except (httpx.TransportError, _ServerError, TimeoutError) as exc:
            raise TeleserviceUnavailable(f"{service}: {exc.__class__.__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise TeleserviceError(f"{service}: HTTP {response.status_code}")
        return response

    @staticmethod
    def _decode(response: httpx.Response, kind: type[T]) -> T:
        try:
            return msgspec.json.decode(response.content, type=kind)
        except msgspec.DecodeError as exc:
            raise TeleserviceError(f"unreadable answer: {exc}") from exc

    async def rights(self, nir: str, birth_date: date) -> RightsAnswer:
        """ADRi: the beneficiary's rights as the Assurance Maladie knows them today."""
        response = await self._call(
            "adri", "POST", "/adri/v1/droits", {"nir": nir, "birth_date": birth_date.isoformat()}
        )
        return self._decode(response, RightsAnswer)

    async def identity(self, traits: dict[str, Any]) -> InsiAnswer:
        """INSi: the INS of a patient, from the NIR or from the identity traits."""
        response = await self._call("insi", "POST", "/insi/v1/identite", traits)
        return self._decode(response, InsiAnswer)

    async def transmit(self, payload: dict[str, Any]) -> str:
        """Send one lot (direct teletransmission, for the simulator and demos); the ARL."""
        response = await self._call("transmission", "POST", "/teletransmission/v1/lots", payload)
        return response.text

    async def fetch_return(self, lot_id: str) -> str:
        """The payment return file of a lot (direct, for the simulator and demos)."""
        response = await self._call(
            "transmission", "GET", f"/teletransmission/v1/returns/{lot_id}", None
        )
        return response.text
