"""Prescriptions (ordonnances): prescriber, lines with structured posology, renewals,
validity; validation against the medications catalog; every version kept and audited.
See docs/prescriptions.md.
"""

from __future__ import annotations

from datetime import date

import msgspec

from appliance.plugin import ServicePlugin
from appliance.store import Store
from services.prescriptions import logic
from services.prescriptions import store as _repository
from services.prescriptions.api import (
    EligibilityController,
    PatientPrescriptionController,
    PrescriptionController,
)
from services.prescriptions.models import Prescription, Product
from services.prescriptions.store import MIGRATIONS


class ActiveMedication(msgspec.Struct, frozen=True, kw_only=True):
    """One line of an active prescription, as therapeutic-redundancy checks need it."""

    prescription_id: str
    line: int
    label: str
    cis: str | None
    atc: str | None
    substances: tuple[tuple[str, str], ...]
    start: date
    end: date


def prescriptions_of(store: Store, patient_id: str) -> list[tuple[str, Prescription]]:
    """A patient's live prescriptions (id, prescription), most recent first. Not audited:
    the caller audits its access to the patient."""
    return [(i.entity_id, i.entity.prescription) for i in _repository.of_patient(store, patient_id)]


def active_medications(store: Store, patient_id: str, as_of: date) -> list[ActiveMedication]:
    """Every line of the patient's prescriptions active on ``as_of``, with the catalog's
    substances and ATC code: the input of the analysis engine's therapeutic-redundancy
    function (same substance from two products, same ATC class), within and across
    prescriptions. Redundancy itself is not computed here: one implementation, in
    ``services.analysis``."""
    found: list[ActiveMedication] = []
    for prescription_id, prescription in prescriptions_of(store, patient_id):
        if not logic.is_active(prescription, as_of):
            continue
        for index, line in enumerate(prescription.lines):
            product = (
                _repository.product_for(store, line.cis, line.cip13)
                if line.cis or line.cip13
                else None
            )
            end = logic.line_end(prescription.prescribed_on, line.posology, prescription.renewals)
            found.append(
                ActiveMedication(
                    prescription_id=prescription_id,
                    line=index,
                    label=product.name if product else (line.label or line.cis or ""),
                    cis=product.cis if product else line.cis,
                    atc=product.atc if product else None,
                    substances=product.substances if product else (),
                    start=prescription.prescribed_on,
                    end=end or logic.treatment_end(prescription),
                )
            )
    return found


def products(store: Store, cis_list: list[str]) -> dict[str, Product]:
    """Catalog products (active moieties, ATC) by CIS."""
    return _repository.products(store, cis_list)


def cis_for_cip13(store: Store, cip13: str) -> str | None:
    return _repository.cis_for_cip13(store, cip13)


PLUGIN = ServicePlugin(
    name="prescriptions",
    controllers=(PrescriptionController, PatientPrescriptionController, EligibilityController),
    migrations=MIGRATIONS,
)

__all__ = [
    "PLUGIN",
    "ActiveMedication",
    "active_medications",
    "cis_for_cip13",
    "prescriptions_of",
    "products",
]
