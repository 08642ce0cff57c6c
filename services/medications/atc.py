"""ATC codes for the whole catalog, from the ~8,000 that CIS_MITM gives (pure, no I/O).

A code is copied only when the evidence is unanimous: every speciality of the same generic
group, or with the same active substances, that already has a code has *this* code. Where
two codes compete (e.g. timolol tablets C07AA06 and eye drops S01ED01 without a route to
tell them apart), nothing is assigned and the speciality is counted as ambiguous: a missing
code is visible, a wrong one is not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from services.medications.logic import fold
from services.medications.models import (
    AtcAssignment,
    BdpmData,
    Component,
    CoverageFigures,
    GenericMembership,
    Presentation,
    Speciality,
)

MAJOR_RATES = frozenset({65, 100})


def active_moieties(components: Iterable[Component]) -> dict[str, frozenset[str]]:
    """CIS -> substance codes of its active moieties.

    BDPM lists a salt (``SA``) and, linked by the same number, the active moiety (``FT``):
    comparing moieties makes amlodipine besilate and amlodipine maleate the same drug.
    """
    by_link: dict[str, dict[str, str]] = defaultdict(dict)
    for item in components:
        link = f"{item.element}|{item.link_no}" if item.link_no is not None else item.substance_code
        links = by_link[item.cis]
        if link not in links or item.nature == "FT":
            links[link] = item.substance_code
    return {cis: frozenset(links.values()) for cis, links in by_link.items()}


def moiety_names(components: Iterable[Component]) -> dict[str, frozenset[str]]:
    """CIS -> folded names of its active moieties.

    BDPM sometimes gives one moiety two substance codes (old and new code of the same
    name); comparing names as well lets such specialities share the code of their twins.
    """
    by_link: dict[str, dict[str, str]] = defaultdict(dict)
    for item in components:
        link = f"{item.element}|{item.link_no}" if item.link_no is not None else item.substance_code
        links = by_link[item.cis]
        if link not in links or item.nature == "FT":
            links[link] = fold(item.substance_name)
    return {cis: frozenset(links.values()) for cis, links in by_link.items()}


def _unanimous(codes: set[str]) -> str | None:
    return next(iter(codes)) if len(codes) == 1 else None


def propagate(
    specialities: Iterable[Speciality],
    components: Iterable[Component],
    generics: Iterable[GenericMembership],
    direct: Mapping[str, str],
) -> tuple[dict[str, AtcAssignment], set[str]]:
    """Assignments for every CIS it can justify, and the CIS left out as ambiguous.

    Rounds repeat until nothing changes, so a code reaching a generic through its group can
    then reach a speciality with the same substances, and so on.
    """
    routes = {s.cis: s.routes for s in specialities}
    known = set(routes)
    components = list(components)
    moieties = {cis: key for cis, key in active_moieties(components).items() if cis in known}
    named = {cis: key for cis, key in moiety_names(components).items() if cis in known}
    groups: dict[int, set[str]] = defaultdict(set)
    for item in generics:
        if item.cis in known:
            groups[item.group_id].add(item.cis)
    assigned: dict[str, AtcAssignment] = {
        cis: AtcAssignment(cis=cis, atc=atc, source="direct", evidence="CIS_MITM")
        for cis, atc in direct.items()
        if cis in known
    }
    ambiguous: set[str] = set()
    changed = True
    while changed:
        changed = False
        for group_id, members in sorted(groups.items()):
            donors = {assigned[c].atc: c for c in sorted(members) if c in assigned}
            atc = _unanimous(set(donors))
            if atc is None:
                continue
            for cis in sorted(members - assigned.keys()):
                assigned[cis] = AtcAssignment(
                    cis=cis, atc=atc, source="generic_group", evidence=f"group:{group_id}"
                )
                changed = True
        with_route: dict[tuple[frozenset[str], tuple[str, ...]], dict[str, str]] = defaultdict(dict)
        any_route: dict[frozenset[str], dict[str, str]] = defaultdict(dict)
        by_name: dict[frozenset[str], dict[str, str]] = defaultdict(dict)
        for cis in sorted(assigned):
            key = moieties.get(cis)
            if key:
                with_route[(key, routes[cis])].setdefault(assigned[cis].atc, cis)
                any_route[key].setdefault(assigned[cis].atc, cis)
            if cis in named:
                by_name[named[cis]].setdefault(assigned[cis].atc, cis)
        ambiguous = set()
        for cis in sorted(known - assigned.keys()):
            key = moieties.get(cis)
            if not key:
                continue
            donors = with_route.get((key, routes[cis]), {})
            atc = _unanimous(set(donors))
            if atc is not None:
                assigned[cis] = AtcAssignment(
                    cis=cis, atc=atc, source="composition_route", evidence=donors[atc]
                )
                changed = True
                continue
            if donors:
                ambiguous.add(cis)
                continue
            donors = any_route.get(key, {})
            atc = _unanimous(set(donors))
            if atc is not None:
                assigned[cis] = AtcAssignment(
                    cis=cis, atc=atc, source="composition", evidence=donors[atc]
                )
                changed = True
                continue
            if donors:
                ambiguous.add(cis)
                continue
            donors = by_name.get(named.get(cis, frozenset()), {})
            atc = _unanimous(set(donors))
            if atc is not None:
                assigned[cis] = AtcAssignment(
                    cis=cis, atc=atc, source="composition_name", evidence=donors[atc]
                )
                changed = True
            elif donors:
                ambiguous.add(cis)
    return assigned, ambiguous


def is_homeopathic(speciality: Speciality) -> bool:
    """Homeopathic registrations have no ATC code by design (WHO does not classify them)."""
    return "homéo" in speciality.amm_procedure.lower()


def coverage(
    specialities: Iterable[Speciality],
    presentations: Iterable[Presentation],
    assigned: Mapping[str, AtcAssignment],
    ambiguous: int = 0,
) -> CoverageFigures:
    """Share of marketed specialities and presentations with an ATC code.

    Without dispensing volumes in BDPM, "top reimbursed" is approximated by the marketed
    presentations reimbursed at 65 % or 100 % (the major rates).
    """
    marketed = [s for s in specialities if s.marketed]
    non_homeo = [s for s in marketed if not is_homeopathic(s)]
    boxes = [p for p in presentations if p.marketed]
    reimbursed = [p for p in boxes if p.reimbursement_rate is not None]
    major = [p for p in reimbursed if p.reimbursement_rate in MAJOR_RATES]
    by_source: dict[str, int] = defaultdict(int)
    for item in marketed:
        if item.cis in assigned:
            by_source[assigned[item.cis].source] += 1
    return CoverageFigures(
        marketed_specialities=len(marketed),
        marketed_with_atc=sum(1 for s in marketed if s.cis in assigned),
        marketed_non_homeopathic=len(non_homeo),
        marketed_non_homeopathic_with_atc=sum(1 for s in non_homeo if s.cis in assigned),
        marketed_presentations=len(boxes),
        marketed_presentations_with_atc=sum(1 for p in boxes if p.cis in assigned),
        reimbursed_presentations=len(reimbursed),
        reimbursed_presentations_with_atc=sum(1 for p in reimbursed if p.cis in assigned),
        major_reimbursed_presentations=len(major),
        major_reimbursed_presentations_with_atc=sum(1 for p in major if p.cis in assigned),
        by_source=dict(sorted(by_source.items())),
        ambiguous=ambiguous,
    )


def assign_catalog(data: BdpmData) -> tuple[dict[str, AtcAssignment], CoverageFigures]:
    """ATC assignments of a parsed BDPM folder and the coverage they reach."""
    direct = {item.cis: item.atc for item in data.mitm}
    assigned, ambiguous = propagate(data.specialities, data.components, data.generics, direct)
    marketed_ambiguous = sum(1 for s in data.specialities if s.marketed and s.cis in ambiguous)
    figures = coverage(data.specialities, data.presentations, assigned, marketed_ambiguous)
    return assigned, figures


def coverage_ratios(figures: CoverageFigures) -> dict[str, float]:
    """The coverage shares, as reported by the CLI, the API and the benchmark."""
    share = CoverageFigures.share
    return {
        "marketed_specialities": share(figures.marketed_with_atc, figures.marketed_specialities),
        "marketed_non_homeopathic": share(
            figures.marketed_non_homeopathic_with_atc, figures.marketed_non_homeopathic
        ),
        "marketed_presentations": share(
            figures.marketed_presentations_with_atc, figures.marketed_presentations
        ),
        "reimbursed_presentations": share(
            figures.reimbursed_presentations_with_atc, figures.reimbursed_presentations
        ),
        "major_reimbursed_presentations": share(
            figures.major_reimbursed_presentations_with_atc, figures.major_reimbursed_presentations
        ),
    }
