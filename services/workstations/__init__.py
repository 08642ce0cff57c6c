"""Counter workstations (postes de comptoir) and the card reader attached to each.

Staff share terminals; knowing which reader sits at which counter lets the card driver route
a Vitale or CPS insertion to the right screen.
"""

from appliance.plugin import ServicePlugin
from services.workstations.api import WorkstationController
from services.workstations.store import MIGRATIONS, card_reader_of_terminal

PLUGIN = ServicePlugin(
    name="workstations",
    controllers=(WorkstationController,),
    migrations=MIGRATIONS,
)

__all__ = ["PLUGIN", "card_reader_of_terminal"]
