"""LLM drafting: BPM synthesis, patient advice, interview summary, validated against the
rule engine's findings before anyone sees them (issue 7).

Two plugins: ``CLI_PLUGIN`` (``hygie models`` and the ``llm_generations`` table) and
``API_PLUGIN`` (the HTTP routes, mounted once the role table has the LLM scopes).
"""

from appliance.plugin import ServicePlugin
from models.cli import models_group
from services.llm.api import LlmController
from services.llm.store import MIGRATIONS

CLI_PLUGIN = ServicePlugin(name="llm", cli=models_group, migrations=MIGRATIONS)
API_PLUGIN = ServicePlugin(name="llm-api", controllers=(LlmController,))

__all__ = ["API_PLUGIN", "CLI_PLUGIN"]
