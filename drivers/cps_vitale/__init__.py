"""CPS and Vitale cards through PC/SC (pcscd + pyscard), one folder per integration.

Modules: ``errors`` (typed errors, French messages), ``apdu`` (ISO 7816-4 encoding, TLV),
``pcsc`` (transport: readers, waiting, T=0/T=1 chaining), ``monitor`` (insertion/removal
events), ``vitale`` and ``cps`` (the card dialogues), ``sesam`` (the certified-library
boundary), ``reader`` (the front door) and ``virtual`` (vpcd virtual cards). See
docs/cards.md.
"""

from drivers.cps_vitale.cps import CpsCard, CpsHolder, CpsSession, CpsSigner, Pkcs11CpsSession
from drivers.cps_vitale.errors import (
    CardError,
    CardRemoved,
    CardTimeout,
    InvalidNir,
    MuteCard,
    PinBlocked,
    Vitale1Card,
    WrongPin,
)
from drivers.cps_vitale.monitor import CardEvent, CardMonitor
from drivers.cps_vitale.reader import (
    CardConfig,
    list_readers,
    open_cps,
    open_signer,
    read_card,
)
from drivers.cps_vitale.sesam import Coverage, NoSesamVitaleLibrary, SesamVitaleReader
from drivers.cps_vitale.vitale import Beneficiary, VitaleCard

__all__ = [
    "Beneficiary",
    "CardConfig",
    "CardError",
    "CardEvent",
    "CardMonitor",
    "CardRemoved",
    "CardTimeout",
    "Coverage",
    "CpsCard",
    "CpsHolder",
    "CpsSession",
    "CpsSigner",
    "InvalidNir",
    "MuteCard",
    "NoSesamVitaleLibrary",
    "PinBlocked",
    "Pkcs11CpsSession",
    "SesamVitaleReader",
    "Vitale1Card",
    "VitaleCard",
    "WrongPin",
    "list_readers",
    "open_cps",
    "open_signer",
    "read_card",
]
