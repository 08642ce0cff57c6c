"""Patient records and the Bilan Partagé de Médication (BPM).

Identity (NIR, INS), médecin traitant, coverage, consents, clinical context and dispensing
history, with NIR/INS and notes sealed field by field under their own key, search by name,
birth date, NIR or INS, stable pseudonyms, and the BPM's yearly cycles. Every read is audited.
See docs/patients.md.
"""

from appliance.plugin import ServicePlugin
from services.patients.api import PatientController, PseudonymController
from services.patients.bpm_api import BpmController
from services.patients.store import MIGRATIONS

PLUGIN = ServicePlugin(
    name="patients",
    controllers=(PatientController, PseudonymController, BpmController),
    migrations=MIGRATIONS,
)

__all__ = ["PLUGIN"]
