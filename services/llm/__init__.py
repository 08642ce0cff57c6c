"""LLM drafting: BPM synthesis, patient advice, interview summary, validated against the
rule engine's findings before anyone sees them (issue 7).

One plugin: ``hygie models``, the ``llm_generations`` and ``llm_jobs`` tables, the HTTP
routes (which queue jobs) and the worker task that runs them. ``CLI_PLUGIN`` and
``API_PLUGIN`` are the same plugin under the names earlier code used.
"""

from appliance.plugin import ServicePlugin
from models.cli import models_group
from services.llm.api import LlmController
from services.llm.store import MIGRATIONS
from services.llm.tasks import register_tasks

PLUGIN = ServicePlugin(
    name="llm",
    controllers=(LlmController,),
    cli=models_group,
    migrations=MIGRATIONS,
    register_tasks=register_tasks,
)
CLI_PLUGIN = PLUGIN
API_PLUGIN = PLUGIN

__all__ = ["API_PLUGIN", "CLI_PLUGIN", "PLUGIN"]
