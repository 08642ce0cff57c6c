"""HTTP API of the medication catalog and the interaction thesaurus (read-only).

Catalog reads are reference data, not patient data, so they are not audited; imports go
through the CLI, which audits them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from appliance.problems import Problem
from appliance.security import requires
from appliance.store import Store
from services.medications import store as repository
from services.medications.atc import coverage_ratios
from services.medications.bdpm import ATC_RE
from services.medications.logic import classify_code, content_hash_name
from services.medications.models import (
    CatalogImportReport,
    EditionsView,
    HistoryEventView,
    HistoryView,
    InteractionView,
    MedicationView,
)

CisParam = Annotated[str, Parameter(pattern=r"^\d{8}$", min_length=8, max_length=8)]
Query = Annotated[str, Parameter(min_length=1, max_length=200)]
READ = requires("medications:read")
MAX_DRUGS = 40


def _one(store: Store, cis: str) -> MedicationView:
    views = repository.medication_views(store, [cis])
    if not views:
        raise Problem(404, "not-found", f"no speciality with CIS {cis} in the catalog")
    return views[0]


class MedicationController(Controller):
    path = "/api/v1/medications"
    tags = ["medications"]

    @get("/", guards=[READ], sync_to_thread=True)
    def search(
        self,
        store: NamedDependency[Store],
        q: Query,
        by: Annotated[Literal["auto", "name", "substance", "text"], Parameter()] = "auto",
        marketed_only: Annotated[bool, Parameter()] = False,
        limit: Annotated[int, Parameter(ge=1, le=50)] = 20,
    ) -> list[MedicationView]:
        """Find by name prefix, substance (DCI), full text, CIS, CIP7, CIP13 or DataMatrix.

        ``by=auto`` recognises codes (8 digits CIS, 7 CIP7, 13 CIP13, 14 GTIN, a scanned
        DataMatrix) and otherwise searches names and substances with accents folded.
        """
        if not q.strip():
            raise Problem(400, "empty-query", "the search text is blank")
        return repository.search(store, q, by=by, limit=limit, marketed_only=marketed_only)

    @get("/scan", guards=[READ], sync_to_thread=True)
    def scan(self, store: NamedDependency[Store], code: Query) -> MedicationView:
        """The speciality of a box from its CIP7, CIP13, GTIN or raw DataMatrix scan."""
        kind, value = classify_code(code)
        if kind not in {"cip7", "cip13"}:
            raise Problem(400, "not-a-box-code", "expected a CIP7, CIP13, GTIN or DataMatrix")
        found = repository.cis_by_code(store, kind, value)
        if not found:
            raise Problem(404, "not-found", f"no box with {kind.upper()} {value} in the catalog")
        return _one(store, found[0])

    @get("/knowledge", guards=[READ], sync_to_thread=True)
    def knowledge(self, store: NamedDependency[Store]) -> EditionsView:
        """Editions in force and the ATC coverage of the catalog."""
        last = repository.last_import(store, "catalog")
        thesaurus = repository.thesaurus_in_force(store)
        ratios: dict[str, float] = {}
        if last is not None:
            decoded = msgspec.json.decode(last["report"], type=CatalogImportReport)
            if decoded.coverage is not None:
                ratios = coverage_ratios(decoded.coverage)
        return EditionsView(
            catalog=content_hash_name(last["edition"], last["sha256"]) if last else None,
            catalog_imported_at=last["imported_at"] if last else None,
            thesaurus=f"ansm-{thesaurus.edition}",
            coverage=ratios,
        )

    @get("/interactions", guards=[READ], sync_to_thread=True)
    def interactions(
        self,
        store: NamedDependency[Store],
        cis: Annotated[list[str] | None, Parameter(max_items=MAX_DRUGS)] = None,
        atc: Annotated[list[str] | None, Parameter(max_items=MAX_DRUGS)] = None,
        with_source: Annotated[bool, Parameter()] = False,
    ) -> list[InteractionView]:
        """Interactions between the given specialities (CIS) and/or ATC codes.

        ``with_source=true`` adds ANSM's own wording of the mechanism and the conduct.
        """
        thesaurus = repository.thesaurus_in_force(store)
        drugs: dict[str, set[str]] = {}
        for code in cis or []:
            if not code.isdigit() or len(code) != 8:
                raise Problem(400, "bad-cis", f"'{code[:20]}' is not a CIS (8 digits)")
            found = repository.drug_keys(store, thesaurus, code)
            if found is None:
                raise Problem(404, "not-found", f"no speciality with CIS {code} in the catalog")
            drugs[found[0]] = found[1]
        for code in atc or []:
            text = code.strip().upper()
            if not ATC_RE.match(text) or len(text) != 7:
                raise Problem(400, "bad-atc", f"'{code[:20]}' is not a 7-character ATC code")
            drugs[text] = thesaurus.keys_for_atc(text)
        if len(drugs) < 2:
            raise Problem(400, "too-few-drugs", "give at least two drugs (cis=... or atc=...)")
        return thesaurus.check(drugs, with_source=with_source)

    @get("/{cis:str}", guards=[READ], sync_to_thread=True)
    def get_medication(self, store: NamedDependency[Store], cis: CisParam) -> MedicationView:
        return _one(store, cis)

    @get("/{cis:str}/history", guards=[READ], sync_to_thread=True)
    def history(self, store: NamedDependency[Store], cis: CisParam) -> HistoryView:
        """Status, price and supply changes seen between imports, oldest first."""
        rows = repository.history_rows(store, cis)
        current = repository.speciality_rows(store, [cis])
        if not current and not rows:
            raise Problem(404, "not-found", f"no speciality with CIS {cis} in the catalog")
        first = repository.first_catalog_import(store)
        return HistoryView(
            cis=cis,
            name=current[0]["name"] if current else "",
            baseline=content_hash_name(first["edition"], first["sha256"]) if first else None,
            events=[
                HistoryEventView(
                    kind=row["kind"],
                    cip13=row["cip13"],
                    old=row["old_value"],
                    new=row["new_value"],
                    observed_at=row["imported_at"],
                    catalog_edition=content_hash_name(row["edition"], row["sha256"]),
                )
                for row in rows
            ],
        )
