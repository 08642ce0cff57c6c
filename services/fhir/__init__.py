"""FHIR R4 import and export (``fhir.resources.R4B``): Patient, Practitioner, Condition,
Observation, AllergyIntolerance, MedicationStatement, MedicationRequest, MedicationDispense
in Bundles, with FR Core identifiers. See docs/fhir.md.
"""

from __future__ import annotations

from appliance.plugin import ServicePlugin
from services.fhir.api import FhirController
from services.fhir.cli import fhir
from services.fhir.models import EntryReport, ImportReport
from services.fhir.store import BundleError, everything, import_bundle

PLUGIN = ServicePlugin(name="fhir", controllers=(FhirController,), cli=fhir)

__all__ = ["PLUGIN", "BundleError", "EntryReport", "ImportReport", "everything", "import_bundle"]
