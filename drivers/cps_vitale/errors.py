"""Typed card errors: a stable code for programs and a French message for the counter.

Every failure the driver can meet (no pcscd, reader unplugged, card pulled out, mute card,
wrong PIN...) is one of these, so the CLI, the API and the UI all show the same sentence and
programs branch on ``code`` rather than on wording.
"""

from __future__ import annotations

from typing import ClassVar


class CardError(Exception):
    """Base of every card failure; ``code`` is stable, ``message`` is for the counter."""

    code: ClassVar[str] = "card_error"
    default_message: ClassVar[str] = "Erreur de lecture de la carte."

    def __init__(self, message: str | None = None, *, detail: str = "") -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(f"{self.code}: {self.message}" + (f" ({detail})" if detail else ""))

    def as_json(self) -> dict[str, str]:
        """The contract's failure object: ``{"error": code, "message": French text}``."""
        return {"error": self.code, "message": self.message}


class PcscUnavailable(CardError):
    code = "pcsc_unavailable"
    default_message = (
        "Le service des lecteurs de cartes (pcscd) ne répond pas : redémarrez le poste "
        "ou prévenez le support."
    )


class NoReader(CardError):
    code = "no_reader"
    default_message = "Aucun lecteur de carte n'est branché."


class ReaderNotFound(CardError):
    code = "reader_not_found"
    default_message = "Le lecteur de carte demandé n'est pas branché."


class ReaderUnplugged(CardError):
    code = "reader_unplugged"
    default_message = "Le lecteur de carte a été débranché pendant la lecture : rebranchez-le."


class CardTimeout(CardError):
    code = "timeout"
    default_message = "Aucune carte n'a été insérée dans le délai imparti."


class NoCard(CardError):
    code = "no_card"
    default_message = "Aucune carte dans le lecteur."


class CardRemoved(CardError):
    code = "card_removed"
    default_message = "La carte a été retirée pendant la lecture : réinsérez-la et attendez la fin."


class MuteCard(CardError):
    code = "card_mute"
    default_message = (
        "La carte ne répond pas : vérifiez le sens d'insertion, nettoyez la puce et réessayez."
    )


class CardBusy(CardError):
    code = "card_busy"
    default_message = "La carte est utilisée par un autre programme : réessayez."


class CardCommandFailed(CardError):
    code = "card_command_failed"
    default_message = "La carte a refusé une commande."


class UnknownCard(CardError):
    code = "unknown_card"
    default_message = "Cette carte n'est ni une carte Vitale ni une carte CPS."


class Vitale1Card(CardError):
    code = "vitale1_card"
    default_message = (
        "Carte Vitale de première génération : elle n'est plus lue. Demandez au patient sa "
        "carte Vitale 2 ou une attestation de droits."
    )


class InvalidCardData(CardError):
    code = "invalid_card_data"
    default_message = "Les données de la carte sont illisibles ou incohérentes."


class InvalidNir(CardError):
    code = "invalid_nir"
    default_message = (
        "Le numéro de sécurité sociale lu sur la carte est invalide (clé fausse) : "
        "la carte est peut-être endommagée."
    )


class WrongPin(CardError):
    code = "wrong_pin"

    def __init__(self, tries_left: int | None) -> None:
        self.tries_left = tries_left
        if tries_left is None:
            message = "Code PIN incorrect."
        elif tries_left == 1:
            message = "Code PIN incorrect : il reste 1 essai avant le blocage de la carte."
        else:
            message = f"Code PIN incorrect : il reste {tries_left} essais."
        super().__init__(message)

    def as_json(self) -> dict[str, str]:
        out = super().as_json()
        if self.tries_left is not None:
            out["tries_left"] = str(self.tries_left)
        return out


class PinBlocked(CardError):
    code = "pin_blocked"
    default_message = (
        "Carte CPS bloquée après trois codes faux : débloquez-la avec le code PUK "
        "(courrier de l'ANS) avant de l'utiliser."
    )


class InvalidPin(CardError):
    code = "invalid_pin"
    default_message = "Le code PIN doit comporter 4 à 8 chiffres."


class PinRequired(CardError):
    code = "pin_required"
    default_message = "Saisissez le code PIN de la carte CPS avant de signer."


class Pkcs11Unavailable(CardError):
    code = "pkcs11_unavailable"
    default_message = (
        "La Cryptolib CPS (PKCS#11) n'est pas utilisable sur ce poste : vérifiez son installation."
    )


class SesamUnavailable(CardError):
    code = "sesam_unavailable"
    default_message = (
        "La lecture des droits de la carte Vitale demande la bibliothèque SESAM-Vitale "
        "homologuée, absente de ce poste."
    )


class SimulatorError(CardError):
    code = "simulator_error"
    default_message = "Le lecteur virtuel (vpcd) n'est pas joignable : pcscd est-il lancé ?"


class AuditUnavailable(CardError):
    code = "audit_unavailable"
    default_message = (
        "Lecture refusée : le journal d'audit de l'appliance est indisponible (clés ou base "
        "de données)."
    )
