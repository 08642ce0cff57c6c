"""Medication knowledge: the BDPM catalog with ATC codes, and the ANSM interaction thesaurus.

Other services use only the functions below: :func:`lookup` (a speciality by CIS, CIP7,
CIP13, GTIN or DataMatrix scan), :func:`lookup_cis`, :func:`medications` and
:func:`products` (by CIS), :func:`search_catalog`, :func:`knowledge_editions` (what an
analysis records it relied on), :func:`current_thesaurus` and :func:`interactions_for`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from appliance.plugin import ServicePlugin
from appliance.store import Store
from services.medications import store as _repository
from services.medications.api import MedicationController
from services.medications.cli import catalog, interactions
from services.medications.logic import fold
from services.medications.models import CatalogProduct, InteractionView, MedicationView
from services.medications.store import MIGRATIONS
from services.medications.thesaurus import Thesaurus


def lookup(store: Store, code: str) -> MedicationView | None:
    """The speciality a code designates, as the counter sees it; ``None`` when unknown.

    ``code`` is a CIS (8 digits), CIP7 (7), CIP13 (13), the GTIN-14 of a box (``0`` +
    CIP13) or a raw DataMatrix scan (``01`` + GTIN, with or without GS separators). Text
    that is none of these is not a code and gives ``None`` (use :func:`search_catalog`).
    """
    cis = _repository.lookup_cis(store, code)
    if cis is None:
        return None
    found = _repository.medication_views(store, [cis])
    return found[0] if found else None


def lookup_cis(store: Store, code: str) -> str | None:
    """The CIS of a CIS, CIP7, CIP13, GTIN or DataMatrix scan present in the catalog."""
    return _repository.lookup_cis(store, code)


def names_a_drug(store: Store, name: str) -> bool:
    """Whether the catalog in force knows this word or name as a substance or a brand.

    Grounding for generated text (issue 7): a drug an LLM names must exist in its input or
    here. Every word of the folded name must be a catalog word (``amlodipine``,
    ``doliprane``, ``acide acetylsalicylique``); an empty catalog knows no drug.
    """
    words = [w for w in fold(name).split(" ") if w]
    known = _repository.drug_words(store)
    return (
        bool(words)
        and all(w in known or len(w) < 4 for w in words)
        and any(w in known for w in words)
    )


def medications(store: Store, cis_list: Sequence[str]) -> list[MedicationView]:
    """Counter views of these specialities, in the given order; unknown CIS are left out."""
    return _repository.medication_views(store, list(cis_list))


def products(store: Store, cis_list: Sequence[str]) -> dict[str, CatalogProduct]:
    """Active moieties, ATC code (with provenance) and status by CIS; unknown CIS absent."""
    return _repository.products(store, cis_list)


def search_catalog(
    store: Store,
    query: str,
    *,
    by: str = "auto",
    limit: int = 20,
    marketed_only: bool = False,
) -> list[MedicationView]:
    """The counter's search: a code finds its box, text a name prefix, DCI or full text.

    ``by`` is ``auto`` (codes recognised, else full text), ``name``, ``substance`` or
    ``text``; accents and case are folded.
    """
    return _repository.search(store, query, by=by, limit=limit, marketed_only=marketed_only)


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
    "CatalogProduct",
    "MedicationView",
    "Thesaurus",
    "current_thesaurus",
    "interactions_for",
    "interactions_for_specialities",
    "knowledge_editions",
    "lookup",
    "lookup_cis",
    "medications",
    "names_a_drug",
    "products",
    "search_catalog",
]
