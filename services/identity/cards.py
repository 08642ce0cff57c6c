"""CPS card login: the extension point the card-reader issue fills.

The login page offers « Carte CPS » once a :class:`CardAuthenticator` is registered. It is
called with the terminal's id (the reader attached to that counter) and must return the
RPPS number of the professional whose card was read *and* whose card PIN and certificate
were verified (the driver in ``drivers/cps_vitale`` does that through pcscd), or ``None``.
The identity service then finds the account with that RPPS number, checks it is active and
issues the tokens like any other login (``amr`` = ``["cps"]``).

An authenticator that also has ``authenticate_pin(terminal, pin)`` gets the PIN typed on the
login page (the card itself verifies it: ``services/cards``); it raises
:class:`CardLoginError` with a French message (wrong PIN and tries left, card blocked, no
card) that the login page shows.

The terminal is the browser's ``hygie_device`` cookie (a random value set by the login page,
also the key of the quick user switch); ``terminal`` is its SHA-256, and
:func:`terminal_id` its short form that the login page shows and that a workstation records
(``services/workstations``), so that each counter's card reader serves that counter.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

DEVICE_COOKIE = "hygie_device"
"""The terminal's cookie (path ``/``, so the UI and the API see which terminal calls)."""


def valid_device(value: str) -> bool:
    """A device cookie as the login page makes it (``secrets.token_urlsafe(32)``)."""
    return 32 <= len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value)


def device_hash(value: str | None) -> str | None:
    """The ``terminal`` of a device cookie value (what the authenticators receive)."""
    if value is None or not valid_device(value):
        return None
    return hashlib.sha256(value.encode()).hexdigest()


def terminal_id(terminal: str) -> str:
    """The short id of a terminal (16 hex digits): shown on the login page, typed into the
    workstation's settings by the administrator."""
    return terminal[:16]


class CardAuthenticator(Protocol):
    def authenticate(self, terminal: str) -> str | None:
        """The verified RPPS number of the card holder at ``terminal``, or None."""


@runtime_checkable
class PinCardAuthenticator(Protocol):
    def authenticate_pin(self, terminal: str, pin: str) -> str:
        """The RPPS number once the card verified ``pin``; raises CardLoginError."""


class CardLoginError(Exception):
    """A card login refused; ``message`` is French, for the login page."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_registered: CardAuthenticator | None = None


def register_card_authenticator(authenticator: CardAuthenticator | None) -> None:
    """Install (or, with None, remove) the CPS card authenticator."""
    global _registered
    _registered = authenticator


def card_authenticator() -> CardAuthenticator | None:
    return _registered
