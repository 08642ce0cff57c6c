"""Prescriptions (ordonnances): prescriber, lines with structured posology, renewals,
validity; validation against the medications catalog; every version kept and audited.
See docs/prescriptions.md.
"""

from __future__ import annotations

import uuid
from datetime import date

from appliance.plugin import ServicePlugin
from appliance.store import Store
from services.prescriptions import logic
from services.prescriptions import store as _repository
from services.prescriptions.api import (
    ActiveLine,
    EligibilityController,
    PatientPrescriptionController,
    PrescriptionController,
    RedundancyController,
    active_lines,
)
from services.prescriptions.cli import prescriptions as _cli
from services.prescriptions.models import Prescription, Product, StoredPrescription
from services.prescriptions.store import MIGRATIONS

ActiveMedication = ActiveLine
"""One line of an active prescription (alias kept for the analysis engine)."""


def prescriptions_of(store: Store, patient_id: str) -> list[tuple[str, Prescription]]:
    """A patient's live prescriptions (id, prescription), most recent first. Not audited:
    the caller audits its access to the patient."""
    return [(i.entity_id, i.entity.prescription) for i in _repository.of_patient(store, patient_id)]


def active_medications(store: Store, patient_id: str, as_of: date) -> list[ActiveLine]:
    """Every line of the patient's prescriptions active on ``as_of``, with the catalog's
    substances and ATC code (not audited: the caller audits)."""
    return active_lines(store, patient_id, as_of)


class PrescriptionRejected(Exception):
    """A prescription that misses mandatory fields; ``errors`` lists ``(key, message)``."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors))
        self.errors = errors


def save_prescription(
    store: Store,
    prescription: Prescription,
    *,
    actor: str,
    today: date,
    prescription_id: str | None = None,
    expected_version: int = 0,
) -> str:
    """Create (or replace, with ``expected_version``) a prescription with the API's rules:
    normalised, mandatory fields checked (:class:`PrescriptionRejected`). Not audited here:
    the caller audits."""
    normalised = logic.normalise(prescription)
    errors = logic.mandatory_errors(normalised, today)
    if errors:
        raise PrescriptionRejected([(e.key, e.message) for e in errors])
    prescription_id = prescription_id or str(uuid.uuid4())
    stored = StoredPrescription(prescription_id=prescription_id, prescription=normalised)
    _repository.save(store, stored, actor=actor, expected_version=expected_version)
    return prescription_id


def products(store: Store, cis_list: list[str]) -> dict[str, Product]:
    """Catalog products (active moieties, ATC) by CIS."""
    return _repository.products(store, cis_list)


def cis_for_cip13(store: Store, cip13: str) -> str | None:
    return _repository.cis_for_cip13(store, cip13)


PLUGIN = ServicePlugin(
    name="prescriptions",
    controllers=(
        PrescriptionController,
        PatientPrescriptionController,
        RedundancyController,
        EligibilityController,
    ),
    migrations=MIGRATIONS,
    cli=_cli,
)

__all__ = [
    "PLUGIN",
    "ActiveMedication",
    "PrescriptionRejected",
    "active_medications",
    "cis_for_cip13",
    "prescriptions_of",
    "products",
    "save_prescription",
]
