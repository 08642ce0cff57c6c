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
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


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
