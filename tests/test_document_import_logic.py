"""Prescription import, pure logic: the French posology parser, strengths, dates, RPPS,
catalog matching on a small hand-made index, page reading, CSV mapping. No I/O."""

from __future__ import annotations

from datetime import date

import pytest

from services.document_import import logic
from services.document_import.models import CatalogEntry, PageText

# --------------------------------------------------------------------------- posology

CASES: list[tuple[str, dict[str, object]]] = [
    (
        "1 cp matin et soir pdt 7j",
        {"dose": 1, "unit": "comprimé", "per_day": 2, "times": ("morning", "evening"), "days": 7},
    ),
    ("QSP 3 mois", {"dose": None, "per_day": None, "days": 90, "quantity": "QSP 3 mois"}),
    ("2 gélules 3 fois par jour", {"dose": 2, "unit": "gélule", "per_day": 3, "times": ()}),
    (
        "1 sachet le soir si besoin",
        {"dose": 1, "unit": "sachet", "per_day": 1, "times": ("evening",), "as_needed": True},
    ),
    ("1 cp 3x/j pdt 5 jours", {"dose": 1, "unit": "comprimé", "per_day": 3, "days": 5}),
    ("1-0-1 pendant 10 jours", {"dose": 1, "per_day": 2, "times": ("morning", "evening")}),
    ("1-1-1-1", {"dose": 1, "per_day": 4, "times": ("morning", "noon", "evening", "bedtime")}),
    ("1/2 cp le soir au coucher", {"dose": 0.5, "per_day": 1, "times": ("bedtime",)}),
    ("½ comprimé le matin", {"dose": 0.5, "unit": "comprimé", "times": ("morning",)}),
    ("une gélule le matin", {"dose": 1, "unit": "gélule", "per_day": 1}),
    ("deux comprimés le soir", {"dose": 2, "unit": "comprimé", "times": ("evening",)}),
    ("2 bouffées toutes les 6 heures si crise", {"dose": 2, "unit": "bouffée", "per_day": 4}),
    ("10 gouttes matin, midi et soir", {"dose": 10, "unit": "goutte", "per_day": 3}),
    ("1 c. à café 3 fois par jour", {"dose": 1, "unit": "cuillère à café", "per_day": 3}),
    ("5 ml 2 fois/jour pendant 8 jours", {"dose": 5, "unit": "ml", "per_day": 2, "days": 8}),
    ("1 comprimé par jour pendant 1 mois", {"dose": 1, "per_day": 1, "days": 30}),
    ("1 cp le midi pendant 2 semaines", {"per_day": 1, "times": ("noon",), "days": 14}),
    ("1 gél le matin QSP 28 jours", {"dose": 1, "unit": "gélule", "days": 28}),
    ("1 cp x 10 jours", {"dose": 1, "days": 10}),
    ("1 cp si douleur", {"dose": 1, "as_needed": True, "per_day": None}),
    ("1 sachet en cas de diarrhée", {"dose": 1, "unit": "sachet", "as_needed": True}),
    ("1 inhalation matin et soir", {"dose": 1, "unit": "inhalation", "per_day": 2}),
    ("1 suppo le soir", {"dose": 1, "unit": "suppositoire", "times": ("evening",)}),
    ("1 application le soir", {"dose": 1, "unit": "application"}),
    ("1 comprimé au petit-déjeuner", {"dose": 1, "times": ("morning",), "per_day": 1}),
    ("1 cp au dîner", {"times": ("evening",)}),
    ("1 g 3 fois par jour", {"dose": 1, "unit": "g", "per_day": 3}),
    ("1,5 cp le matin", {"dose": 1.5, "unit": "comprimé"}),
    ("1 cp matin et soir pdt 7)", {"days": 7}),  # a common OCR slip for « 7j »
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_posology_parser(text: str, expected: dict[str, object]) -> None:
    parsed = logic.parse_posology(text)
    found = {
        "dose": parsed.dose,
        "unit": parsed.unit,
        "per_day": parsed.per_day,
        "times": parsed.times,
        "days": parsed.duration_days,
        "as_needed": parsed.as_needed,
        "quantity": parsed.quantity,
    }
    for key, value in expected.items():
        assert found[key] == value, (key, found)


def test_posology_never_completes_what_is_not_written() -> None:
    daily = logic.parse_posology("2 cp par jour")
    assert (daily.dose, daily.unit, daily.per_day) == (2, "comprimé", None)
    empty = logic.parse_posology("voir notice")
    assert empty == logic.ParsedPosology()
    assert not logic.looks_like_posology("Docteur Jean MARTIN")


def test_renewals_and_non_substitution() -> None:
    parsed = logic.parse_posology("1 cp le matin, à renouveler 2 fois")
    assert (parsed.renewable, parsed.renewals) == (True, 2)
    assert logic.parse_posology("renouvelable 3 fois").renewals == 3
    bare = logic.parse_posology("renouvelable")
    assert (bare.renewable, bare.renewals) == (True, None)
    assert logic.parse_posology("Non substituable").non_substitutable
    assert logic.parse_posology("NS MTE").non_substitutable
    assert not logic.parse_posology("1 cp le soir").non_substitutable


def test_posology_output_shape() -> None:
    out = logic.posology_out(logic.parse_posology("1 cp matin et soir pdt 7j"))
    assert (out.dose, out.unit, out.per_day, out.times, out.duration_days) == (
        1.0,
        "comprimé",
        2.0,
        ["morning", "evening"],
        7,
    )
    assert logic.posology_out(logic.parse_posology("QSP 3 mois")).times is None


# --------------------------------------------------------------------------- small readers


def test_strengths() -> None:
    assert logic.parse_strength("DOLIPRANE 1000 mg, comprimé") == "1000 mg"
    assert logic.parse_strength("Doliprane 1 g") == "1 g"
    assert logic.parse_strength("ALPRAZOLAM 0,50 mg") == "0,50 mg"
    assert logic.parse_strength("AMOXICILLINE/ACIDE CLAVULANIQUE 500 mg/62,5 mg") == (
        "500 mg/62,5 mg"
    )
    assert logic.parse_strength("2,5 mg/ml") == "2,5 mg/ml"
    assert logic.parse_strength("DOLIPRANE comprimé") is None
    assert logic.strength_mg("1 g") == logic.strength_mg("1000 mg") == 1000
    assert logic.strength_mg("8 mg/5 mg") is None


def test_dates_and_rpps() -> None:
    assert logic.parse_date("Lyon, le 12/03/2025") == date(2025, 3, 12)
    assert logic.parse_date("12 mars 2025") == date(2025, 3, 12)
    assert logic.parse_date("le 1er décembre 2024") == date(2024, 12, 1)
    assert logic.parse_date("31/02/2025") is None
    assert logic.valid_rpps("RPPS : 100 0000 0009") == "10000000009"
    assert logic.valid_rpps("RPPS 10000000008") is None  # wrong Luhn key: not guessed
    assert logic.valid_rpps("Tél 0478000000") is None


# --------------------------------------------------------------------------- matching

ENTRIES = [
    CatalogEntry(
        cis="60234100",
        name="DOLIPRANE 1000 mg, comprimé",
        form="comprimé",
        atc="N02BE01",
        substances=(("PARACÉTAMOL", "1000 mg"),),
        cip13s=("3400935955838",),
    ),
    CatalogEntry(
        cis="66567738",
        name="DOLIPRANE 1000 mg, comprimé effervescent sécable",
        form="comprimé effervescent sécable",
        atc="N02BE01",
        substances=(("PARACÉTAMOL", "1000 mg"),),
    ),
    CatalogEntry(
        cis="60000001",
        name="DOLIPRANE 500 mg, gélule",
        form="gélule",
        atc="N02BE01",
        substances=(("PARACÉTAMOL", "500 mg"),),
        cip13s=("3400900000001", "3400900000002"),
    ),
    CatalogEntry(
        cis="65728601",
        name="AMLODIPINE BIOGARAN 5 mg, gélule",
        form="gélule",
        atc="C08CA01",
        substances=(("AMLODIPINE", "5 mg"),),
    ),
    CatalogEntry(
        cis="61200859",
        name="ALPRAZOLAM VIATRIS 0,50 mg, comprimé sécable",
        form="comprimé sécable",
        atc="N05BA12",
        substances=(("ALPRAZOLAM", "0,50 mg"),),
    ),
]
INDEX = logic.CatalogIndex(ENTRIES)


def test_match_brand_strength_and_form() -> None:
    match = logic.match_line(INDEX, "Doliprane 1000 mg cp")
    assert match is not None
    assert (match.cis, match.cip13, match.atc, match.strength) == (
        "60234100",
        "3400935955838",
        "N02BE01",
        "1000 mg",
    )
    assert match.score == 1.0
    effervescent = logic.match_line(INDEX, "DOLIPRANE 1000 mg comprimé effervescent")
    assert effervescent is not None
    assert effervescent.cis == "66567738"
    gram = logic.match_line(INDEX, "Doliprane 1 g")
    assert gram is not None
    assert gram.cis in {"60234100", "66567738"}
    several_boxes = logic.match_line(INDEX, "DOLIPRANE 500 mg gélule")
    assert several_boxes is not None
    assert several_boxes.cip13 is None


def test_match_tolerates_ocr_slips_and_never_invents() -> None:
    slip = logic.match_line(INDEX, "DOLPRANE 1000 MG CPR")
    assert slip is not None
    assert slip.cis == "60234100"
    assert slip.score < 1
    decimal = logic.match_line(INDEX, "Alprazolam Viatris 0,5 mg")
    assert decimal is not None
    assert decimal.cis == "61200859"
    # A brand at a strength the catalog does not have: no CIS, the written strength kept.
    odd = logic.match_line(INDEX, "Doliprane 750 mg")
    assert odd is not None
    assert (odd.cis, odd.strength) == (None, "750 mg")
    # No strength written and the brand has several: the product line is found, no CIS.
    bare = logic.match_line(INDEX, "Doliprane cp")
    assert bare is not None
    assert (bare.cis, bare.substance, bare.atc) == (None, "PARACÉTAMOL", "N02BE01")
    single = logic.match_line(INDEX, "Amlodipine Biogaran gélule")
    assert single is not None
    assert single.cis == "65728601"  # one strength only: nothing was chosen
    misread = logic.match_line(INDEX, "Doliprane 500 ns gélule")  # « mg » misread
    assert misread is not None
    assert misread.cis == "60000001"
    assert misread.score < 1
    assert logic.match_line(INDEX, "Doliprane 5° cp").cis is None  # type: ignore[union-attr]
    posology_number = logic.match_line(INDEX, "Doliprane cp 1 cp le soir")
    assert posology_number is not None
    assert posology_number.cis is None  # « 1 » is a dose, not « 1 g »
    assert logic.match_line(INDEX, "Docteur Jean MARTIN") is None
    assert logic.match_line(INDEX, "Zorglub 10 mg") is None
    assert logic.match_line(logic.CatalogIndex([]), "Doliprane 1000 mg") is None


def test_match_substance_gives_no_cis() -> None:
    match = logic.match_line(INDEX, "Paracétamol 1000 mg")
    assert match is not None
    assert (match.cis, match.substance, match.atc, match.strength) == (
        None,
        "PARACÉTAMOL",
        "N02BE01",
        "1000 mg",
    )


# --------------------------------------------------------------------------- page reading


def page(*lines: str) -> PageText:
    return PageText(number=1, lines=lines, line_confidences=tuple(90.0 for _ in lines))


def test_read_prescription() -> None:
    read = logic.read_prescription(
        [
            page(
                "Docteur Jean MARTIN",
                "Médecin généraliste",
                "12 rue des Lilas 69003 Lyon - Tél. 04 78 00 00 00",
                "RPPS 10000000009   N° AM 691234567",
                "Lyon, le 12/03/2025",
                "Mme Jeanne DUPONT, 72 ans, 64 kg",
                "DOLIPRANE 1000 mg cp",
                "1 cp matin et soir pdt 7j",
                "Amlodipine Biogaran 5 mg gélule : 1 gélule le matin QSP 3 mois",
                "Zorglub 10 mg : 1 cp le soir",
                "Non substituable",
                "À renouveler 2 fois",
            )
        ],
        INDEX,
    )
    assert read.prescriber_name == "Docteur Jean MARTIN"
    assert read.prescriber_rpps == "10000000009"
    assert read.prescriber_am == "691234567"
    assert read.prescriber_specialty == "Médecin généraliste"
    assert read.patient_name == "Mme Jeanne DUPONT"
    assert (read.patient_age, read.patient_weight_kg) == (72, 64.0)
    assert read.prescribed_on == date(2025, 3, 12)
    assert read.renewals == 2
    assert not read.non_substitutable_all  # the mention is under a line: that line's
    assert [line.match.cis if line.match else None for line in read.lines] == [
        "60234100",
        "65728601",
    ]
    first, second = read.lines
    assert first.posology.times == ("morning", "evening")
    assert first.posology.duration_days == 7
    assert second.posology.duration_days == 90
    assert second.posology.dose == 1

    result = logic.extraction("scan.png", read, pages=1, ocr_ms=5)
    assert result.prescriber.rpps == "10000000009"
    assert result.lines[0].confidence == 0.9  # OCR 90 %, exact catalog match
    content = logic.draft_content(read)
    assert content.renewals == 2
    assert [line.non_substitutable for line in content.lines] == [False, True]
    assert content.prescriber_rpps.confidence == 1.0


def test_unknown_values_stay_null() -> None:
    read = logic.read_prescription([page("Ordonnance", "Zorglub 10 mg")], INDEX)
    result = logic.extraction("x.png", read, pages=1, ocr_ms=1)
    assert result.prescriber.name is None
    assert result.prescriber.rpps is None
    assert result.date is None
    assert result.patient.name is None
    assert result.lines == []


# --------------------------------------------------------------------------- CSV


def test_csv_mapping() -> None:
    text = (
        "Num_Ordonnance;Date;Médecin;RPPS;Patient;Libellé;CIP13;Posologie;Durée\n"
        "A1;12/03/2025;Dr MARTIN;10000000009;DUPONT Jeanne;DOLIPRANE 1000 mg cp;"
        "3400935955838;1 cp matin et soir;pendant 7 jours\n"
        "A1;12/03/2025;Dr MARTIN;10000000009;DUPONT Jeanne;AMLODIPINE BIOGARAN 5 mg;;1 gél le "
        "matin;\n"
        "B2;13/03/2025;Dr PETIT;;DURAND Paul;ALPRAZOLAM VIATRIS 0,50 mg;;1/2 cp le soir;\n"
    )
    rows = logic.read_csv(text)
    grouped = logic.csv_pages(rows)
    assert list(grouped) == ["A1", "B2"]
    assert grouped["A1"][0].cip13 == "3400935955838"
    assert grouped["A1"][0].posology == "1 cp matin et soir pendant 7 jours"
    with pytest.raises(logic.CsvError, match="colonnes manquantes"):
        logic.read_csv("a;b\n1;2\n")
    with pytest.raises(logic.CsvError, match="vide"):
        logic.read_csv("")
