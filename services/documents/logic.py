"""Document composition (pure): the French wording of each template, the plan de prise
columns, priorities and sources of findings, and the CSV exports.

No I/O here: ``workflow.py`` gathers the inputs through the other services' public
functions and hands plain values in, so each template is tested directly on its words.
Nothing is invented: a posology that does not say when to take a drug stays "à préciser",
an unknown dose stays empty, and every finding prints the rule and source it came from.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from services.documents.models import (
    AnswerBox,
    Block,
    DocumentKind,
    DocumentModel,
    FindingItem,
    Heading,
    Paragraph,
    PatientInfo,
    Pharmacy,
    StepInfo,
    Table,
    TreatmentRow,
)

TEMPLATE_VERSIONS: dict[DocumentKind, str] = {
    "synthesis": "synthesis/1",
    "plan_de_prise": "plan_de_prise/1",
    "fiche_conseil": "fiche_conseil/1",
    "compte_rendu": "compte_rendu/1",
}
"""Bump a kind's version whenever its wording or layout changes (stored with each file)."""

PRIORITY_OF: dict[str, int] = {
    "contraindication": 1,
    "avoid": 1,
    "high": 1,
    "precaution": 2,
    "moderate": 2,
    "consider": 3,
    "low": 3,
}
"""Severities of ``services.analysis`` grouped into three priorities for the GP."""
PRIORITY_TITLES = {
    1: "Priorité 1 — à traiter rapidement",
    2: "Priorité 2 — à discuter",
    3: "Priorité 3 — pour information",
}
SEVERITY_FR = {
    "contraindication": "contre-indication",
    "avoid": "association déconseillée / à éviter",
    "precaution": "précaution d'emploi",
    "consider": "à prendre en compte",
    "high": "élevée",
    "moderate": "modérée",
    "low": "faible",
}
STEP_FR = {
    "adhesion": "Adhésion",
    "recueil": "Entretien de recueil",
    "analyse": "Analyse des traitements",
    "transmission": "Transmission au médecin traitant",
    "conseil": "Entretien conseil",
    "suivi": "Entretien de suivi",
    "observance": "Suivi de l'observance",
}
SEX_FR = {"F": "Femme", "M": "Homme", "I": "Indéterminé"}
TIMES_FR = {"morning": "matin", "noon": "midi", "evening": "soir", "bedtime": "coucher"}
NO_TIME = "moments de prise à préciser avec le pharmacien"


def french_date(day: date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else ""


def french_number(value: float) -> str:
    """``0.5`` → ``0,5``; ``2.0`` → ``2`` (French decimal comma, no trailing zero)."""
    return f"{value:g}".replace(".", ",")


# --------------------------------------------------------------------------- treatments


def treatment_row(
    *,
    product: str,
    dci: str,
    dose: float | None,
    unit: str | None,
    times_per_day: float | None,
    times_of_day: Sequence[str],
    as_needed: bool,
    duration: str | None,
    original_text: str | None,
    since: date | None,
) -> TreatmentRow:
    """One active line in the words of the documents, from its structured posology.

    The times-of-day columns are filled only from ``times_of_day``: "2 fois par jour"
    alone does not say morning and evening, so the row is marked ``times_unknown``.
    """
    dose_text = f"{french_number(dose)} {unit}".strip() if dose is not None else ""
    per_take = dose_text or "1 prise"
    parts: list[str] = []
    if dose_text:
        parts.append(dose_text)
    if times_of_day:
        parts.append(", ".join(TIMES_FR.get(t, t) for t in times_of_day))
    elif times_per_day:
        parts.append(f"{french_number(times_per_day)} fois par jour")
    if as_needed:
        parts.append("si besoin")
    if duration:
        parts.append(f"pendant {duration}")
    posology = original_text or ", ".join(parts)
    columns = {t: (per_take if t in times_of_day else "") for t in TIMES_FR}
    return TreatmentRow(
        product=product,
        dci=dci,
        dose=dose_text,
        posology=posology,
        since=since,
        morning=columns["morning"],
        noon=columns["noon"],
        evening=columns["evening"],
        bedtime=columns["bedtime"],
        as_needed=per_take if as_needed else "",
        times_unknown=not times_of_day and not as_needed,
    )


def duration_text(value: int, unit: str) -> str:
    names = {"day": ("jour", "jours"), "week": ("semaine", "semaines"), "month": ("mois", "mois")}
    one, many = names.get(unit, (unit, unit))
    return f"{value} {one if value == 1 else many}"


# --------------------------------------------------------------------------- findings


def sources_of(
    kind: str, rule: str, evidence: Mapping[str, Any], knowledge: Mapping[str, str | None]
) -> tuple[str, ...]:
    """Where a finding comes from, as the engine recorded it (never a made-up reference)."""
    found: list[str] = []
    thesaurus = evidence.get("thesaurus")
    if isinstance(thesaurus, Mapping):
        pages = thesaurus.get("pages") or []
        where = f", p. {', '.join(str(p) for p in pages)}" if pages else ""
        found.append(f"Thésaurus des interactions ANSM, édition {thesaurus.get('edition')}{where}")
    for key in ("source", "scale"):
        value = evidence.get(key)
        if isinstance(value, str) and value:
            found.append(value)
    if not found and kind == "interaction" and knowledge.get("thesaurus"):
        found.append(f"Thésaurus des interactions ANSM ({knowledge['thesaurus']})")
    if not found:
        found.append(f"Règle du moteur d'analyse : {rule}")
    return tuple(dict.fromkeys(found))


def finding_item(
    kind: str,
    rule: str,
    severity: str,
    message: str,
    recommendation: str,
    recommendation_gp: str,
    evidence: Mapping[str, Any],
    knowledge: Mapping[str, str | None],
) -> FindingItem:
    return FindingItem(
        kind=kind,
        rule=rule,
        severity=severity,
        message=message,
        recommendation=recommendation,
        recommendation_gp=recommendation_gp or recommendation,
        sources=sources_of(kind, rule, evidence, knowledge),
    )


def by_priority(findings: Iterable[FindingItem]) -> dict[int, list[FindingItem]]:
    """Findings grouped by priority 1-3 (an unknown severity counts as priority 2)."""
    groups: dict[int, list[FindingItem]] = {1: [], 2: [], 3: []}
    for item in findings:
        groups[PRIORITY_OF.get(item.severity, 2)].append(item)
    return groups


def engine_synthesis(findings: Sequence[FindingItem]) -> str:
    """The synthesis in the engine's own words, when no validated LLM draft is given."""
    if not findings:
        return (
            "L'analyse des traitements n'a relevé aucun point nécessitant une intervention "
            "auprès du prescripteur."
        )
    groups = by_priority(findings)
    counts = ", ".join(f"{len(items)} de priorité {p}" for p, items in groups.items() if items)
    return (
        f"L'analyse des traitements a relevé {len(findings)} point(s) ({counts}). "
        "Chacun est détaillé ci-dessous avec sa source et une proposition soumise à "
        "votre avis."
    )


# --------------------------------------------------------------------------- templates


def _header(pharmacy: Pharmacy) -> list[Block]:
    lines = [pharmacy.name, *pharmacy.address_lines]
    if pharmacy.phone:
        lines.append(f"Tél. {pharmacy.phone}")
    if pharmacy.finess:
        lines.append(f"FINESS {pharmacy.finess}")
    return [Paragraph(text=line, style="small") for line in lines]


def _patient(patient: PatientInfo, *, with_gp: bool) -> list[Block]:
    blocks: list[Block] = [
        Heading(text="Patient", level=2),
        Paragraph(
            text=f"{patient.family_name} {patient.given_names}, né(e) le "
            f"{french_date(patient.birth_date)} ({SEX_FR.get(patient.sex, patient.sex)})"
        ),
    ]
    if with_gp:
        gp = patient.gp_name or "non renseigné"
        rpps = f" (RPPS {patient.gp_rpps})" if patient.gp_rpps else ""
        blocks.append(Paragraph(text=f"Médecin traitant : {gp}{rpps}"))
    return blocks


def _treatment_table(treatments: Sequence[TreatmentRow]) -> list[Block]:
    if not treatments:
        return [Paragraph(text="Aucun traitement actif enregistré.")]
    return [
        Table(
            columns=("Médicament", "DCI", "Dose", "Posologie", "Depuis le"),
            rows=tuple(
                (t.product, t.dci, t.dose, t.posology, french_date(t.since)) for t in treatments
            ),
            widths=(2.8, 3.2, 1.6, 2.8, 1.8),
        )
    ]


def _footer(kind: DocumentKind, pharmacy: Pharmacy, today: date) -> str:
    return f"{pharmacy.name} — document du {french_date(today)} — modèle {TEMPLATE_VERSIONS[kind]}"


def synthesis(
    pharmacy: Pharmacy,
    patient: PatientInfo,
    treatments: Sequence[TreatmentRow],
    findings: Sequence[FindingItem],
    not_evaluated: Sequence[tuple[str, Sequence[str]]],
    *,
    synthesis_text: str,
    synthesis_from_llm: bool,
    pharmacist: str,
    today: date,
) -> DocumentModel:
    """Synthèse de l'analyse des traitements, addressed to the médecin traitant."""
    blocks: list[Block] = [*_header(pharmacy)]
    blocks.append(
        Paragraph(
            text="Bilan partagé de médication — document destiné au médecin traitant",
            style="emphasis",
        )
    )
    blocks += _patient(patient, with_gp=True)
    blocks.append(Heading(text="Traitements en cours", level=2))
    blocks += _treatment_table(treatments)
    blocks.append(Heading(text="Synthèse", level=2))
    blocks.append(Paragraph(text=synthesis_text))
    if synthesis_from_llm:
        blocks.append(
            Paragraph(
                text="Texte rédigé avec l'aide d'un modèle de langage local, vérifié par le "
                "moteur d'analyse et relu par le pharmacien.",
                style="small",
            )
        )
    blocks.append(Heading(text="Points relevés par l'analyse", level=2))
    groups = by_priority(findings)
    if not findings:
        blocks.append(Paragraph(text="Aucun point relevé."))
    for priority, items in groups.items():
        if not items:
            continue
        blocks.append(Heading(text=PRIORITY_TITLES[priority], level=3))
        for item in items:
            severity = SEVERITY_FR.get(item.severity, item.severity)
            blocks.append(Paragraph(text=f"{item.rule} ({severity}) : {item.message}"))
            blocks.append(Paragraph(text="Source : " + " ; ".join(item.sources), style="small"))
    if not_evaluated:
        blocks.append(Heading(text="Règles non évaluées (données manquantes)", level=3))
        for rule, missing in not_evaluated:
            blocks.append(Paragraph(text=f"{rule} : {', '.join(missing)}", style="small"))
    blocks.append(Heading(text="Propositions du pharmacien", level=2))
    if not findings:
        blocks.append(Paragraph(text="Aucune proposition."))
    ordered = [item for p in (1, 2, 3) for item in groups[p]]
    for number, item in enumerate(ordered, start=1):
        blocks.append(
            Paragraph(text=f"Proposition {number} ({item.rule}) : {item.recommendation_gp}")
        )
        blocks.append(AnswerBox(label=f"Réponse du médecin à la proposition {number}"))
    blocks.append(Heading(text="Pharmacien", level=2))
    blocks.append(Paragraph(text=f"{pharmacist}, le {french_date(today)}"))
    return DocumentModel(
        kind="synthesis",
        template_version=TEMPLATE_VERSIONS["synthesis"],
        title="Synthèse de l'analyse des traitements",
        pharmacy=pharmacy,
        blocks=tuple(blocks),
        footer=_footer("synthesis", pharmacy, today),
        created_on=today,
    )


def plan_de_prise(
    pharmacy: Pharmacy, patient: PatientInfo, treatments: Sequence[TreatmentRow], *, today: date
) -> DocumentModel:
    """Plan de prise for the patient: one row per drug, one column per time of day."""
    blocks: list[Block] = [*_header(pharmacy), *_patient(patient, with_gp=False)]
    blocks.append(Heading(text="Quand prendre mes médicaments", level=2))
    if not treatments:
        blocks.append(Paragraph(text="Aucun traitement actif enregistré.", style="large"))
    else:
        rows = tuple(
            (
                t.product,
                t.morning,
                t.noon,
                t.evening,
                t.bedtime,
                t.as_needed,
            )
            for t in treatments
        )
        blocks.append(
            Table(
                columns=("Médicament", "Matin", "Midi", "Soir", "Coucher", "Si besoin"),
                rows=rows,
                widths=(7.6, 3.7, 3.7, 3.7, 3.7, 3.7),
                large=True,
            )
        )
        unclear = [t for t in treatments if t.times_unknown]
        for t in unclear:
            blocks.append(Paragraph(text=f"{t.product} : {t.posology} — {NO_TIME}.", style="large"))
    blocks.append(
        Paragraph(
            text="Ne modifiez pas votre traitement sans l'avis de votre médecin ou de votre "
            "pharmacien.",
            style="large",
        )
    )
    return DocumentModel(
        kind="plan_de_prise",
        template_version=TEMPLATE_VERSIONS["plan_de_prise"],
        title="Mon plan de prise",
        pharmacy=pharmacy,
        blocks=tuple(blocks),
        footer=_footer("plan_de_prise", pharmacy, today),
        created_on=today,
    )


def _step_blocks(step: StepInfo) -> list[Block]:
    blocks: list[Block] = [
        Paragraph(
            text=f"{STEP_FR.get(step.kind, step.kind)} du {french_date(step.performed_on)}, "
            f"année {step.cycle_year} du bilan, pharmacien : {step.pharmacist}"
        )
    ]
    if step.treatments_changed is not None:
        changed = "oui" if step.treatments_changed else "non"
        blocks.append(
            Paragraph(text=f"Traitements modifiés depuis la dernière analyse : {changed}")
        )
    blocks.append(Heading(text="Notes de l'entretien", level=2))
    blocks.append(Paragraph(text=step.notes or "Aucune note enregistrée."))
    return blocks


def fiche_conseil(
    pharmacy: Pharmacy,
    patient: PatientInfo,
    step: StepInfo,
    treatments: Sequence[TreatmentRow],
    findings: Sequence[FindingItem],
    *,
    today: date,
) -> DocumentModel:
    """Fiche conseil handed to the patient after the entretien conseil."""
    blocks: list[Block] = [*_header(pharmacy), *_patient(patient, with_gp=False)]
    blocks += _step_blocks(step)
    blocks.append(Heading(text="Mes traitements", level=2))
    blocks += _treatment_table(treatments)
    blocks.append(Heading(text="Conseils", level=2))
    if not findings:
        blocks.append(Paragraph(text="Continuez votre traitement comme prescrit."))
    for p in (1, 2, 3):
        for item in by_priority(findings)[p]:
            blocks.append(Paragraph(text=item.recommendation))
    return DocumentModel(
        kind="fiche_conseil",
        template_version=TEMPLATE_VERSIONS["fiche_conseil"],
        title="Fiche conseil",
        pharmacy=pharmacy,
        blocks=tuple(blocks),
        footer=_footer("fiche_conseil", pharmacy, today),
        created_on=today,
    )


def compte_rendu(
    pharmacy: Pharmacy, patient: PatientInfo, step: StepInfo, *, today: date
) -> DocumentModel:
    """Compte rendu d'entretien of one recorded BPM step."""
    blocks: list[Block] = [*_header(pharmacy), *_patient(patient, with_gp=True)]
    blocks += _step_blocks(step)
    return DocumentModel(
        kind="compte_rendu",
        template_version=TEMPLATE_VERSIONS["compte_rendu"],
        title=f"Compte rendu d'entretien — {STEP_FR.get(step.kind, step.kind)}",
        pharmacy=pharmacy,
        blocks=tuple(blocks),
        footer=_footer("compte_rendu", pharmacy, today),
        created_on=today,
    )


# --------------------------------------------------------------------------- CSV

BPM_STATUS_COLUMNS = (
    "patient_id",
    "nom",
    "prenoms",
    "date_naissance",
    "annee_bpm",
    "statut",
    "ouvert_le",
    "derniere_etape",
    "derniere_etape_le",
    "prochaine_etape",
    "clos_le",
    "motif_abandon",
)
BPM_STATUS_TEXT = (1, 2, 7, 9, 11)
"""Columns of the BPM status export that hold names or words (the others: ids, dates)."""
FINDINGS_COLUMNS = (
    "analyse_id",
    "patient_ref",
    "date_analyse",
    "type",
    "regle",
    "gravite",
    "priorite",
    "message",
    "recommandation",
)
FINDINGS_TEXT = (1, 3, 4, 5, 7, 8)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A cell as text; a leading formula character is quoted so a spreadsheet opening the
    export never runs it (CSV injection)."""
    text = "" if value is None else value.isoformat() if isinstance(value, date) else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    text_columns: Sequence[int] | None = None,
) -> bytes:
    """UTF-8 with a BOM and ``;`` separators: what a French spreadsheet opens as is.

    Cells of ``text_columns`` (every column when ``None``) that start with a formula
    character are defused as :func:`csv_cell` does; the other columns hold ids, codes,
    numbers and dates the appliance itself wrote. The csv module writes ``None`` as an
    empty cell and a date as its ISO form by itself (10,000 rows in the export benchmark).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(columns)
    starts = frozenset(_FORMULA_START)
    if text_columns is None:
        writer.writerows(
            [("'" + v if v[:1] in starts else v) if v.__class__ is str else v for v in row]
            for row in rows
        )
    else:
        checked = tuple(text_columns)
        for row in rows:
            if any(str(row[i])[:1] in starts for i in checked):
                cells = list(row)
                for i in checked:
                    cells[i] = csv_cell(cells[i])
                writer.writerow(cells)
            else:
                writer.writerow(row)
    return ("\ufeff" + buffer.getvalue()).encode()
