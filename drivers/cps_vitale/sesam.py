"""Rights, exemptions and AMC data: the boundary with the certified SESAM-Vitale library.

Those data on a Vitale card are protected: only the reading library certified by the GIE
SESAM-Vitale (« API de lecture Vitale », shipped with the certified software kit) may read
them, with the pharmacist's CPS. Hygie does not imitate it. This module defines the contract
an adapter around that library must meet, and the only implementation this repository can
honestly ship: one that says the library is absent.

Contract of :class:`SesamVitaleReader`:

* ``read_rights(reader, beneficiary_nir, cps)`` is called with the reader holding the Vitale
  card, the NIR read by :mod:`drivers.cps_vitale.vitale` and an open CPS session whose PIN
  was verified; it returns :class:`Coverage` for that beneficiary, dated by the card;
* it raises :class:`~drivers.cps_vitale.errors.CardError` subclasses only (the adapter maps
  the library's return codes), never the library's own exceptions;
* it never writes to the card (updating rights is a teleservice, not a card read);
* amounts and rates are returned as the library gives them, with no rounding or defaults:
  a field the library does not fill stays ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

from drivers.cps_vitale.cps import CpsSigner
from drivers.cps_vitale.errors import SesamUnavailable


@dataclass(frozen=True)
class Exemption:
    code: str
    """Exoneration code as the library reports it (e.g. ALD); never mapped by Hygie."""
    start: date | None
    end: date | None


@dataclass(frozen=True)
class Coverage:
    """AMO and AMC rights of one beneficiary, as the certified library read them."""

    nir: str
    amo_scheme: str | None
    """Régime / caisse / centre, as the library gives it."""
    amo_start: date | None
    amo_end: date | None
    exemptions: tuple[Exemption, ...]
    amc_id: str | None
    amc_end: date | None
    read_at: date


class SesamVitaleReader(Protocol):
    def read_rights(self, reader: str, beneficiary_nir: str, cps: CpsSigner) -> Coverage: ...


class NoSesamVitaleLibrary:
    """Where no certified library is installed: every call says so, in French."""

    def read_rights(self, reader: str, beneficiary_nir: str, cps: CpsSigner) -> Coverage:
        raise SesamUnavailable(detail=f"reader {reader!r}")
