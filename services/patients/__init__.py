"""Patient records and the Bilan Partagé de Médication (BPM).

Identity (NIR, INS), médecin traitant, coverage, consents, clinical context and dispensing
history, with NIR/INS and notes sealed field by field under their own key, search by name,
birth date, NIR or INS, stable pseudonyms, and the BPM's yearly cycles. Every read is audited.
See docs/patients.md.
"""

from __future__ import annotations

from datetime import date

from appliance.plugin import ServicePlugin
from appliance.store import Store
from services.patients import store as _repository
from services.patients.api import PatientController, PseudonymController
from services.patients.bpm_api import BpmController
from services.patients.models import Dispensing
from services.patients.store import MIGRATIONS


def dispensing_lines(
    store: Store, patient_id: str, *, since: date | None = None, limit: int = 1000
) -> list[Dispensing]:
    """A patient's live dispensing lines, most recent first (for BPM eligibility: their CIS
    and CIP13 map to substances through the medications service).

    Not audited here: the route that calls it audits its access to the patient.
    """
    lines = _repository.dispensings_of(store, patient_id, since=since, limit=limit, offset=0)
    return [line.entity.entry for line in lines]


PLUGIN = ServicePlugin(
    name="patients",
    controllers=(PatientController, PseudonymController, BpmController),
    migrations=MIGRATIONS,
)

__all__ = ["PLUGIN", "dispensing_lines"]
