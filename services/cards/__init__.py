"""Card readers at the counter: Vitale and CPS readings for the API, the CLI and the UI.

A thin service over ``drivers/cps_vitale``: NIR check with the patients service's rule,
pre-filled patient form, audited reads, polled card events, and the CPS login
authenticator. See docs/cards.md.
"""

from appliance.plugin import ServicePlugin
from services.cards.api import CardsController
from services.cards.cli import cards as _cli
from services.cards.logic import CpsPinAuthenticator, open_signer, patient_form, read

PLUGIN = ServicePlugin(name="cards", controllers=(CardsController,), cli=_cli)

__all__ = ["PLUGIN", "CpsPinAuthenticator", "open_signer", "patient_form", "read"]
