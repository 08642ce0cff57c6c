"""The services this appliance mounts (composition root: the only place naming them all)."""

from __future__ import annotations

from appliance.backup import PLUGIN as BACKUP
from appliance.plugin import ServicePlugin
from appliance.security.revocation import SECURITY_MIGRATIONS
from appliance.store import Migration
from appliance.tasks import PLATFORM_MIGRATIONS
from services.analysis import PLUGIN as ANALYSIS
from services.billing import PLUGIN as BILLING
from services.cards import PLUGIN as CARDS
from services.document_import import PLUGIN as DOCUMENT_IMPORT
from services.documents import PLUGIN as DOCUMENTS
from services.fhir import PLUGIN as FHIR
from services.identity import PLUGINS as IDENTITY
from services.llm import PLUGIN as LLM
from services.medications import PLUGINS as MEDICATIONS
from services.patients import PLUGIN as PATIENTS
from services.prescriptions import PLUGIN as PRESCRIPTIONS
from services.sesam_vitale import PLUGIN as SESAM_VITALE
from services.workstations import PLUGIN as WORKSTATIONS
from sync import PLUGIN as SYNC

INSTALLED_SERVICES: tuple[ServicePlugin, ...] = (
    *IDENTITY,
    WORKSTATIONS,
    CARDS,
    *MEDICATIONS,
    PATIENTS,
    PRESCRIPTIONS,
    DOCUMENT_IMPORT,
    FHIR,
    ANALYSIS,
    LLM,
    DOCUMENTS,
    SYNC,
    BACKUP,
    SESAM_VITALE,
    BILLING,
)


def domain_migrations(plugins: tuple[ServicePlugin, ...] = INSTALLED_SERVICES) -> list[Migration]:
    """Every migration of the domain database: the platform's, then each service's."""
    migrations = [*PLATFORM_MIGRATIONS, *SECURITY_MIGRATIONS]
    for plugin in plugins:
        migrations.extend(plugin.migrations)
    return migrations
