"""The driver's front door: wait for a card, tell Vitale from CPS, read it, time it.

``hygie cards read``, the API and the counter UI all go through :func:`read_card`, so every
caller sees the same JSON and the same typed errors.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from drivers.cps_vitale.cps import (
    CPS_AID,
    CPS_CERT_FID,
    CPS_PIN_REFERENCE,
    CPS_SIGN_KEY_REFERENCE,
    CpsCard,
    CpsSession,
    CpsSigner,
    Pkcs11CpsSession,
)
from drivers.cps_vitale.errors import UnknownCard
from drivers.cps_vitale.pcsc import CardChannel, PcscContext, ReaderState, pcsc_context
from drivers.cps_vitale.vitale import VitaleCard, looks_like_vitale, read_vitale


@dataclass(frozen=True)
class CardConfig:
    """What a site may tune (from the appliance settings ``cards_*``)."""

    cps_aid: bytes = CPS_AID
    cps_cert_fid: bytes = CPS_CERT_FID
    cps_pin_reference: int = CPS_PIN_REFERENCE
    cps_key_reference: int = CPS_SIGN_KEY_REFERENCE
    exchange_timeout_s: float = 5.0
    """Longest a whole card dialogue may take once the card is in."""
    allow_virtual_readers: bool = True
    """Whether the vpcd virtual readers count (off in production: a local process could
    insert a forged card there)."""
    pkcs11_module: str | None = None
    """ANS Cryptolib CPS module: when set, :func:`open_signer` goes through PKCS#11."""


DEFAULT_CONFIG = CardConfig()


def list_readers(config: CardConfig = DEFAULT_CONFIG) -> list[ReaderState]:
    """Every reader pcscd knows, with whether a card is in it."""
    with pcsc_context(hide_virtual=not config.allow_virtual_readers) as context:
        return context.snapshot()


def _cps(channel: CardChannel, config: CardConfig) -> CpsSession:
    return CpsSession(
        channel,
        aid=config.cps_aid,
        cert_fid=config.cps_cert_fid,
        pin_reference=config.cps_pin_reference,
        key_reference=config.cps_key_reference,
    )


@contextmanager
def _card(
    context: PcscContext,
    reader: str | None,
    timeout_s: float,
    config: CardConfig,
    *,
    reset_on_close: bool = False,
) -> Iterator[CardChannel]:
    state = context.wait_for_card(reader, timeout_s)
    with context.connect(
        state.name, timeout_s=config.exchange_timeout_s, reset_on_close=reset_on_close
    ) as channel:
        yield channel


def read_card(
    reader: str | None = None, timeout_s: float = 10.0, config: CardConfig = DEFAULT_CONFIG
) -> VitaleCard | CpsCard:
    """Wait up to ``timeout_s`` for a card (in ``reader``, or the first reader holding one),
    then read it: a Vitale's beneficiaries or a CPS's public identity (no PIN)."""
    with (
        pcsc_context(hide_virtual=not config.allow_virtual_readers) as context,
        _card(context, reader, timeout_s, config) as channel,
    ):
        started = time.perf_counter()
        identities = looks_like_vitale(channel)
        card: VitaleCard | CpsCard
        if identities:
            card = read_vitale(channel, identities)
        else:
            session = _cps(channel, config)
            if not session.select():
                raise UnknownCard(detail=f"ATR {channel.atr.hex().upper()}")
            card = session.describe()
        elapsed = round((time.perf_counter() - started) * 1000)
        return dataclasses.replace(card, apdus=channel.apdus, ms=elapsed)


@contextmanager
def open_cps(
    reader: str | None = None, timeout_s: float = 10.0, config: CardConfig = DEFAULT_CONFIG
) -> Iterator[CpsSession]:
    """A :class:`CpsSession` on the CPS in ``reader`` (or the first reader with a card).

    The card stays connected for the block: verify the PIN, then sign, in one go::

        with open_cps() as cps:
            cps.verify_pin(pin)
            signature = cps.sign(hashlib.sha256(document).digest())
    """
    with (
        pcsc_context(hide_virtual=not config.allow_virtual_readers) as context,
        _card(context, reader, timeout_s, config, reset_on_close=True) as channel,
    ):
        session = _cps(channel, config)
        if not session.select():
            raise UnknownCard("Cette carte n'est pas une carte CPS.")
        yield session


@contextmanager
def open_signer(
    reader: str | None = None, timeout_s: float = 10.0, config: CardConfig = DEFAULT_CONFIG
) -> Iterator[CpsSigner]:
    """The CPS as a :class:`CpsSigner`: through the Cryptolib (PKCS#11) when
    ``config.pkcs11_module`` is set, else APDUs through pcscd (:func:`open_cps`)."""
    if config.pkcs11_module:
        session = Pkcs11CpsSession(config.pkcs11_module)
        try:
            yield session
        finally:
            session.close()
        return
    with open_cps(reader, timeout_s, config) as cps:
        yield cps
