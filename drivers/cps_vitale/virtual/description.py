"""Virtual cards described by a small JSON file (``hygie cards simulate --vitale FILE``).

Vitale::

    {"beneficiaries": [{"surname": "MARTIN", "first_name": "JEANNE",
                        "birth_date": "1948-03-12", "nir": "248037512345623"}],
     "generation": 2, "protocol": "T=0"}

CPS::

    {"holder": {"surname": "DURAND", "first_name": "CLAIRE", "rpps": "10001234567",
                "profession": "Pharmacien"}, "pin": "1234", "protocol": "T=1"}

Optional on both: ``"faults": {"remove_after_apdus": N, "mute": true, "delay_ms": N}``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from drivers.cps_vitale.errors import SimulatorError
from drivers.cps_vitale.virtual.cards import (
    VirtualCard,
    VirtualCps,
    VirtualVitale,
    VitaleBeneficiaryData,
)
from drivers.cps_vitale.virtual.pki import holder_certificate


def _bad(why: str) -> SimulatorError:
    return SimulatorError(f"Description de carte virtuelle invalide : {why}.")


def _text(item: dict[str, Any], key: str, pattern: str = r"^.{1,60}$") -> str:
    value = item.get(key)
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise _bad(f"« {key} » manquant ou mal formé")
    return value


def _faults(spec: dict[str, Any], card: VirtualCard) -> VirtualCard:
    faults = spec.get("faults") or {}
    if not isinstance(faults, dict):
        raise _bad("« faults » doit être un objet")
    after = faults.get("remove_after_apdus")
    if after is not None:
        if not isinstance(after, int) or after < 0:
            raise _bad("« remove_after_apdus » doit être un entier positif")
        card.remove_after_apdus = after
    card.mute = bool(faults.get("mute", False))
    delay = faults.get("delay_ms", 0)
    if not isinstance(delay, int) or not 0 <= delay <= 10_000:
        raise _bad("« delay_ms » : 0 à 10000")
    card.delay_s = delay / 1000
    protocol = spec.get("protocol", card.protocol)
    if protocol not in ("T=0", "T=1"):
        raise _bad("« protocol » vaut T=0 ou T=1")
    card.protocol = protocol
    return card


def parse_card(kind: str, spec: dict[str, Any]) -> VirtualCard:
    if not isinstance(spec, dict):
        raise _bad("un objet JSON est attendu")
    if kind == "vitale":
        people = spec.get("beneficiaries")
        if not isinstance(people, list) or not 1 <= len(people) <= 12:
            raise _bad("« beneficiaries » : 1 à 12 bénéficiaires")
        beneficiaries = []
        for item in people:
            if not isinstance(item, dict):
                raise _bad("chaque bénéficiaire est un objet")
            born = _text(item, "birth_date", r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
            beneficiaries.append(
                VitaleBeneficiaryData(
                    surname=_text(item, "surname"),
                    first_name=_text(item, "first_name"),
                    birth_date=born.replace("-", ""),
                    nir=_text(item, "nir", r"^[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}$"),
                    quality=str(item.get("quality", "00")),
                )
            )
        generation = spec.get("generation", 2)
        if generation not in (1, 2):
            raise _bad("« generation » vaut 1 ou 2")
        card: VirtualCard = VirtualVitale(beneficiaries=beneficiaries, generation=generation)
        return _faults(spec, card)
    if kind == "cps":
        holder = spec.get("holder")
        if not isinstance(holder, dict):
            raise _bad("« holder » manquant")
        surname, first = _text(holder, "surname"), _text(holder, "first_name")
        rpps = _text(holder, "rpps", r"^[0-9]{11}$")
        profession = _text(holder, "profession")
        pin = spec.get("pin", "1234")
        if not isinstance(pin, str) or not re.fullmatch(r"^[0-9]{4,8}$", pin):
            raise _bad("« pin » : 4 à 8 chiffres")
        key, certificate = holder_certificate(surname, first, "8" + rpps, profession)
        tries = spec.get("tries_left", 3)
        if not isinstance(tries, int) or not 0 <= tries <= 3:
            raise _bad("« tries_left » : 0 à 3")
        cps = VirtualCps(certificate=certificate, key=key, pin=pin, tries_left=tries)
        return _faults(spec, cps)
    raise _bad(f"type de carte inconnu {kind!r}")


def load_card(kind: str, path: Path) -> VirtualCard:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"{path} illisible ({exc})") from exc
    return parse_card(kind, spec)
