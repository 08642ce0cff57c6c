"""PC/SC transport through pyscard against the real ``pcscd``.

The low-level ``smartcard.scard`` calls are used rather than pyscard's high-level classes:
they give the raw PC/SC result codes, which map one-to-one onto the typed errors of
:mod:`drivers.cps_vitale.errors`, and ``SCardGetStatusChange`` takes a timeout, so waiting
for a card never blocks past what the caller allowed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from smartcard import scard

from drivers.cps_vitale.apdu import Response, get_response
from drivers.cps_vitale.errors import (
    CardBusy,
    CardError,
    CardRemoved,
    CardTimeout,
    MuteCard,
    NoCard,
    NoReader,
    PcscUnavailable,
    ReaderNotFound,
    ReaderUnplugged,
)

PNP_NOTIFICATION = "\\\\?PnP?\\Notification"
VIRTUAL_READER_PREFIX = "Virtual PCD"
"""Readers of Debian's vsmartcard-vpcd driver (virtual cards): hidden where not allowed."""
# Longest answer chain accepted: GET RESPONSE loops stop here (a broken card could loop).
MAX_RESPONSE_BYTES = 65_536
# How long a failed exchange waits for pcscd to say whether the card left (its poll is 0.4 s).
SETTLE_MS = 1500

_REMOVED = {scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_RESET_CARD}
_UNPLUGGED = {
    scard.SCARD_E_READER_UNAVAILABLE,
    scard.SCARD_E_UNKNOWN_READER,
    getattr(scard, "SCARD_E_NO_READERS_AVAILABLE", 0x8010002E),
}
_SERVICE = {
    scard.SCARD_E_NO_SERVICE,
    getattr(scard, "SCARD_E_SERVICE_STOPPED", 0x8010001E),
    scard.SCARD_F_COMM_ERROR,
    scard.SCARD_F_INTERNAL_ERROR,
}
_MUTE = {
    scard.SCARD_W_UNRESPONSIVE_CARD,
    scard.SCARD_W_UNPOWERED_CARD,
    scard.SCARD_E_PROTO_MISMATCH,
}


def _message(code: int) -> str:
    try:
        return f"{scard.SCardGetErrorMessage(code)} (0x{code & 0xFFFFFFFF:08X})"
    except Exception:  # pragma: no cover - pyscard always knows its codes
        return f"0x{code & 0xFFFFFFFF:08X}"


def error_for(code: int, during: str) -> CardError:
    """The typed error for a PC/SC result code."""
    detail = f"{during}: {_message(code)}"
    if code in _REMOVED:
        return CardRemoved(detail=detail)
    if code in _UNPLUGGED:
        return ReaderUnplugged(detail=detail)
    if code in _SERVICE:
        return PcscUnavailable(detail=detail)
    if code in _MUTE:
        return MuteCard(detail=detail)
    if code == scard.SCARD_E_SHARING_VIOLATION:
        return CardBusy(detail=detail)
    if code == scard.SCARD_E_TIMEOUT:
        return CardTimeout(detail=detail)
    return CardError(detail=detail)


@dataclass(frozen=True)
class ReaderState:
    """A reader as PC/SC reports it; ``atr`` is empty without a card."""

    name: str
    present: bool
    mute: bool
    exclusive: bool
    atr: bytes

    @classmethod
    def from_event(cls, name: str, event: int, atr: Any) -> ReaderState:
        return cls(
            name=name,
            present=bool(event & scard.SCARD_STATE_PRESENT),
            mute=bool(event & scard.SCARD_STATE_MUTE),
            exclusive=bool(event & scard.SCARD_STATE_EXCLUSIVE),
            atr=bytes(atr or b""),
        )


class PcscContext:
    """One PC/SC context (a connection to pcscd); close it, or use :func:`pcsc_context`."""

    def __init__(self, *, hide_virtual: bool = False) -> None:
        self.hide_virtual = hide_virtual
        try:
            code, handle = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        except scard.error as exc:  # pragma: no cover - pyscard raises only on misuse
            raise PcscUnavailable(detail=str(exc)) from exc
        if code != scard.SCARD_S_SUCCESS:
            raise PcscUnavailable(detail=_message(code))
        self.handle = handle

    def close(self) -> None:
        if self.handle is not None:
            scard.SCardReleaseContext(self.handle)
            self.handle = None

    def cancel(self) -> None:
        """Wake up a :meth:`status_change` blocked in another thread."""
        if self.handle is not None:
            scard.SCardCancel(self.handle)

    def readers(self) -> list[str]:
        code, readers = scard.SCardListReaders(self.handle, [])
        if code in (scard.SCARD_E_NO_READERS_AVAILABLE, scard.SCARD_E_READER_UNAVAILABLE):
            return []
        if code != scard.SCARD_S_SUCCESS:
            raise error_for(code, "SCardListReaders")
        if self.hide_virtual:
            return [r for r in readers if not r.startswith(VIRTUAL_READER_PREFIX)]
        return list(readers)

    def status_change(
        self, known: dict[str, int], timeout_ms: int
    ) -> tuple[bool, dict[str, tuple[int, bytes]]]:
        """Block until a reader's state differs from ``known`` (or the timeout).

        Returns whether something changed and each reader's ``(event state, ATR)``. The PnP
        pseudo-reader in ``known`` reports readers plugged or unplugged.
        """
        states = [(name, state) for name, state in known.items()]
        code, result = scard.SCardGetStatusChange(self.handle, timeout_ms, states)
        if code in (scard.SCARD_E_TIMEOUT, scard.SCARD_E_CANCELLED):
            return False, {}
        if code != scard.SCARD_S_SUCCESS:
            raise error_for(code, "SCardGetStatusChange")
        return True, {name: (event, bytes(atr or b"")) for name, event, atr in result}

    def snapshot(self, readers: list[str] | None = None) -> list[ReaderState]:
        """Each reader's state now (no waiting)."""
        names = self.readers() if readers is None else readers
        if not names:
            return []
        changed, result = self.status_change({name: scard.SCARD_STATE_UNAWARE for name in names}, 0)
        return [
            ReaderState.from_event(name, *result.get(name, (0, b""))) for name in names if changed
        ]

    def wait_for_card(self, reader: str | None, timeout_s: float) -> ReaderState:
        """The first reader (or ``reader``) holding a card, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        known: dict[str, int] = {}
        while True:
            names = self.readers()
            if reader is not None and reader not in names and time.monotonic() >= deadline:
                raise ReaderNotFound(detail=reader)
            targets = names if reader is None else [reader] if reader in names else []
            for state in self.snapshot(targets) if targets else []:
                if state.present:
                    if state.mute:
                        raise MuteCard(detail=f"{state.name}: SCARD_STATE_MUTE")
                    return state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not names:
                    raise NoReader()
                raise CardTimeout()
            known = {name: scard.SCARD_STATE_EMPTY for name in targets}
            known[PNP_NOTIFICATION] = scard.SCARD_STATE_UNAWARE if not names else len(names) << 16
            self.status_change(known, int(min(remaining, 1.0) * 1000) + 1)

    @contextmanager
    def connect(
        self, reader: str, *, timeout_s: float = 10.0, reset_on_close: bool = False
    ) -> Iterator[CardChannel]:
        """An open card; ``reset_on_close`` resets it when done, so that a verified PIN does
        not outlive the session (SCARD_LEAVE_CARD would keep the card's security state for
        the next program that connects)."""
        code, card, protocol = scard.SCardConnect(
            self.handle,
            reader,
            scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
        )
        if code != scard.SCARD_S_SUCCESS:
            if code in (scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_REMOVED_CARD):
                raise NoCard(detail=_message(code))
            raise error_for(code, "SCardConnect")
        try:
            # One dialogue at a time: another program's APDUs between our SELECT and READ
            # BINARY would read the wrong file.
            code = scard.SCardBeginTransaction(card)
            if code != scard.SCARD_S_SUCCESS:
                raise error_for(code, "SCardBeginTransaction")
            try:
                yield CardChannel(self, reader, card, protocol, timeout_s)
            finally:
                scard.SCardEndTransaction(card, scard.SCARD_LEAVE_CARD)
        finally:
            scard.SCardDisconnect(
                card, scard.SCARD_RESET_CARD if reset_on_close else scard.SCARD_LEAVE_CARD
            )


@contextmanager
def pcsc_context(*, hide_virtual: bool = False) -> Iterator[PcscContext]:
    context = PcscContext(hide_virtual=hide_virtual)
    try:
        yield context
    finally:
        context.close()


class CardChannel:
    """An open card: transmit APDUs with the T=0 chaining rules, count them, keep a deadline.

    ``61xx`` (more data waiting) is followed by GET RESPONSE until ``9000``; ``6Cxx`` (wrong
    length) resends the same command with ``Le`` = ``xx``. Both happen on T=0 cards and on
    some T=1 cards; doing it here keeps the card dialogues protocol-agnostic.
    """

    def __init__(
        self, context: PcscContext, reader: str, card: Any, protocol: int, timeout_s: float
    ) -> None:
        self.context = context
        self.reader = reader
        self.card = card
        self.protocol = protocol
        self.apdus = 0
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        code, _name, _state, _protocol, atr = scard.SCardStatus(card)
        if code != scard.SCARD_S_SUCCESS:
            raise error_for(code, "SCardStatus")
        self.atr = bytes(atr)

    def renew(self) -> None:
        """A new dialogue on a card kept open (a CPS session): a fresh deadline."""
        self.deadline = time.monotonic() + self.timeout_s

    @property
    def protocol_name(self) -> str:
        return "T=1" if self.protocol == scard.SCARD_PROTOCOL_T1 else "T=0"

    def _raw(self, apdu: bytes) -> Response:
        if time.monotonic() > self.deadline:
            raise CardTimeout(
                "La carte met trop de temps à répondre : retirez-la et réinsérez-la.",
                detail="read deadline passed",
            )
        self.apdus += 1
        code, answer = scard.SCardTransmit(self.card, self.protocol, list(apdu))
        if code != scard.SCARD_S_SUCCESS:
            raise self._transmit_error(code)
        if len(answer) < 2:
            # No status word: the card went silent mid-exchange (vpcd reports a pulled card
            # this way before pcscd's next poll notices it is gone).
            raise self._transmit_error(scard.SCARD_E_NOT_TRANSACTED)
        return Response.parse(bytes(answer))

    def _transmit_error(self, code: int) -> CardError:
        """A failed exchange: the card left (removed), or it is there but silent (mute)."""
        error = error_for(code, "SCardTransmit")
        if type(error) is not CardError:
            return error
        # pcscd notices a pulled card at its next poll (about 0.4 s): wait for that verdict
        # before calling the card mute.
        try:
            changed, result = self.context.status_change(
                {self.reader: scard.SCARD_STATE_PRESENT}, SETTLE_MS
            )
        except CardError as exc:
            return exc
        event = result.get(self.reader, (scard.SCARD_STATE_PRESENT, b""))[0] if changed else 0
        if changed and event & (scard.SCARD_STATE_EMPTY | scard.SCARD_STATE_UNAVAILABLE):
            if event & scard.SCARD_STATE_UNAVAILABLE:
                return ReaderUnplugged(detail=_message(code))
            return CardRemoved(detail=_message(code))
        return MuteCard(detail=_message(code))

    def transmit(self, apdu: bytes) -> Response:
        response = self._raw(apdu)
        if response.sw1 == 0x6C:
            # Wrong Le: resend the same command with the length the card announced.
            body = apdu[:4] + apdu[4:-1] if len(apdu) > 4 else apdu[:4]
            response = self._raw(body + bytes([response.sw2]))
        data = bytearray(response.data)
        while response.sw1 == 0x61:
            response = self._raw(get_response(response.sw2))
            data += response.data
            if len(data) > MAX_RESPONSE_BYTES:
                raise CardError(detail="GET RESPONSE chain too long")
        return Response(bytes(data), response.sw1, response.sw2)
