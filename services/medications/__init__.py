"""Medication knowledge: the BDPM catalog with ATC codes, and the ANSM interaction thesaurus.

Other services use only the functions below: :func:`knowledge_editions` (what an analysis
records it relied on), :func:`current_thesaurus` and :func:`interactions_for`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from appliance.plugin import ServicePlugin
from appliance.store import Store
from services.medications import store as _repository
from services.medications.api import MedicationController
from services.medications.cli import catalog, interactions
from services.medications.models import InteractionView
from services.medications.store import MIGRATIONS
from services.medications.thesaurus import Thesaurus


def current_thesaurus(store: Store | None = None) -> Thesaurus:
    """The edition in force: the last one imported on this appliance, else the bundled one."""
    return _repository.thesaurus_in_force(store)


def knowledge_editions(store: Store) -> dict[str, str | None]:
    """Catalog and thesaurus editions in force, as an analysis must record them."""
    return {
        "catalog": _repository.catalog_edition(store),
        "thesaurus": f"ansm-{current_thesaurus(store).edition}",
    }


def interactions_for(
    drugs: Mapping[str, Sequence[str]],
    store: Store | None = None,
    *,
    with_source: bool = False,
) -> list[InteractionView]:
    """Interactions between drugs given as ``label -> ATC codes``, most severe first.

    Each ATC code is mapped to the thesaurus substances it carries and to their classes;
    a drug whose codes map to nothing simply yields no interaction (see ``unmapped`` in
    the data file for the names that cannot be found).
    """
    thesaurus = current_thesaurus(store)
    keys = {
        label: set().union(*(thesaurus.keys_for_atc(code) for code in codes)) if codes else set()
        for label, codes in drugs.items()
    }
    return thesaurus.check(keys, with_source=with_source)


def interactions_for_specialities(
    store: Store, cis_list: Sequence[str], *, with_source: bool = False
) -> list[InteractionView]:
    """Interactions between catalog specialities (by CIS), most severe first.

    Preferred over ATC codes: a speciality is matched through its BDPM substance codes as
    well as its ATC code, and a third of the catalog has no ATC code (see the docs).
    Unknown CIS raise ``KeyError``.
    """
    thesaurus = current_thesaurus(store)
    drugs: dict[str, set[str]] = {}
    for cis in cis_list:
        found = _repository.drug_keys(store, thesaurus, cis)
        if found is None:
            raise KeyError(cis)
        drugs[found[0]] = found[1]
    return thesaurus.check(drugs, with_source=with_source)


PLUGIN = ServicePlugin(
    name="medications",
    controllers=(MedicationController,),
    migrations=MIGRATIONS,
    cli=catalog,
)
INTERACTIONS_PLUGIN = ServicePlugin(name="interactions", cli=interactions)
PLUGINS: tuple[ServicePlugin, ...] = (PLUGIN, INTERACTIONS_PLUGIN)
"""Two plugins because a plugin mounts one command group and the issue asks for two."""

__all__ = [
    "INTERACTIONS_PLUGIN",
    "PLUGIN",
    "PLUGINS",
    "Thesaurus",
    "current_thesaurus",
    "interactions_for",
    "interactions_for_specialities",
    "knowledge_editions",
]
