"""Virtual Vitale and CPS cards for development and tests, plugged into the real ``pcscd``
through Debian's ``vsmartcard-vpcd`` reader driver (see docs/cards.md)."""

from drivers.cps_vitale.virtual.cards import VirtualCard, VirtualCps, VirtualVitale
from drivers.cps_vitale.virtual.description import load_card, parse_card
from drivers.cps_vitale.virtual.vpcd import VPCD_PORT, VpcdLink

__all__ = [
    "VPCD_PORT",
    "VirtualCard",
    "VirtualCps",
    "VirtualVitale",
    "VpcdLink",
    "load_card",
    "parse_card",
]
