"""Pure rules of the medication service: codes, folding, BDPM lines, ATC, history, PDF parsing."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from services.medications.atc import active_moieties, propagate
from services.medications.bdpm import (
    SPECS,
    BdpmFileError,
    decode,
    parse_cents,
    parse_date,
    parse_file,
    parse_rate,
)
from services.medications.bdpm import LineError as BdpmLineError
from services.medications.logic import (
    cip13_check_digit_ok,
    classify_code,
    datamatrix_cip13,
    diff_catalog,
    fold,
    search_tokens,
)
from services.medications.models import (
    CatalogSnapshot,
    Component,
    GenericMembership,
    HistoryKind,
    Level,
    Speciality,
)
from services.medications.thesaurus import heading_members, message, name_keys, uninvert
from services.medications.thesaurus_pdf import (
    PdfWord,
    parse_entries,
    parse_levels,
    split_members,
    split_see_also,
)

CIP13 = "3400930000000"


def test_fold_removes_accents_case_and_punctuation() -> None:
    assert fold("Paracétamol") == "PARACETAMOL"
    assert fold("ŒSTROGÈNES conjugués") == "OESTROGENES CONJUGUES"
    assert fold("  l'acide   acétylsalicylique ") == "L ACIDE ACETYLSALICYLIQUE"
    assert search_tokens('doli" OR *') == ["DOLI", "OR"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("60234100", ("cis", "60234100")),
        ("3004520", ("cip7", "3004520")),
        ("3400930045205", ("cip13", "3400930045205")),
        ("03400930045205", ("cip13", "3400930045205")),
        ("010340093004520517270131102X4\x1d21ABC", ("cip13", "3400930045205")),
        ("]d2010340093004520517270131", ("cip13", "3400930045205")),
        ("(01)03400930045205(17)270131", ("cip13", "3400930045205")),
        ("doliprane", ("text", "doliprane")),
        ("12345", ("text", "12345")),
    ],
)
def test_classify_code(raw: str, expected: tuple[str, str]) -> None:
    assert classify_code(raw) == expected


def test_datamatrix_ignores_non_french_gtins() -> None:
    assert datamatrix_cip13("0105012345678900") is None
    assert cip13_check_digit_ok("3400949497294")
    assert not cip13_check_digit_ok("3400949497295")


def test_bdpm_values() -> None:
    assert parse_date("16/03/2011") == date(2011, 3, 16)
    assert parse_date("") is None
    with pytest.raises(BdpmLineError):
        parse_date("31/02/2020")
    assert parse_cents("24,34") == 2434
    assert parse_cents("1,394,44") == 139444
    assert parse_cents("17,172,30") == 1717230
    assert parse_cents("") is None
    assert parse_rate("65 %") == 65
    assert parse_rate("100%") == 100
    assert parse_rate("") is None
    with pytest.raises(BdpmLineError):
        parse_rate("150%")


def test_decode_detects_encodings() -> None:
    text = "60002283\tcomprimé\n"
    assert decode(text.encode("utf-8"), "f") == (text, "utf-8")
    assert decode(text.encode("cp1252"), "f") == (text, "windows-1252")
    with pytest.raises(BdpmFileError, match="NUL"):
        decode(text.encode("utf-16"), "f")
    with pytest.raises(BdpmFileError, match="empty"):
        decode(b"\r\n", "f")
    with pytest.raises(BdpmFileError, match="wrong encoding"):
        decode(b"abc\x81\x8d\xff", "f")


def _spec_line(cis: str = "61266250", **changes: str) -> str:
    fields = [
        cis,
        "A 313 200 000 UI POUR CENT, pommade",
        "pommade",
        "cutanée",
        "Autorisation active",
        "Procédure nationale",
        "Commercialisée",
        "12/03/1998",
        "",
        "",
        " PHARMA DEVELOPPEMENT",
        "Non",
    ]
    for index, value in changes.items():
        fields[int(index.removeprefix("f"))] = value
    return "\t".join(fields)


def test_parse_file_reports_bad_values_with_line_numbers() -> None:
    raw = (
        _spec_line()
        + "\t\t\r\n\r\n"
        + _spec_line("6126625X")
        + "\r\n"
        + _spec_line("61266251", f7="99/99/1998")
        + "\r\n"
    ).encode()
    records, report = parse_file(SPECS["CIS_bdpm"], raw)
    assert [number for number, _ in records] == [1]
    assert records[0][1].routes == ("cutanée",)
    assert report.blank == 1
    assert [(r.line_no, r.reason) for r in report.rejected] == [
        (3, "CIS '6126625X' is not 8 digits"),
        (4, "date '99/99/1998' does not exist"),
    ]


def test_missing_fields_mean_a_damaged_file() -> None:
    short = "\t".join(_spec_line().split("\t")[:11])
    with pytest.raises(BdpmFileError, match="line 2: 11 fields, expected 12"):
        parse_file(SPECS["CIS_bdpm"], (_spec_line() + "\n" + short + "\n").encode())


def _speciality(cis: str, routes: tuple[str, ...] = ("orale",)) -> Speciality:
    return Speciality(
        cis=cis,
        name=f"S{cis}",
        form="comprimé",
        routes=routes,
        amm_status="Autorisation active",
        amm_procedure="Procédure nationale",
        marketed=True,
        amm_date=None,
        bdm_status="",
        eu_number="",
        holders="",
        reinforced_monitoring=False,
    )


def _component(cis: str, code: str, nature: str = "SA", link: int = 1) -> Component:
    return Component(
        cis=cis,
        element="comprimé",
        substance_code=code,
        substance_name=code,
        dosage="",
        dosage_ref="",
        nature=nature,
        link_no=link,
    )


def test_active_moieties_prefer_the_therapeutic_fraction() -> None:
    moieties = active_moieties(
        [_component("1", "salt", "SA"), _component("1", "base", "FT"), _component("2", "base")]
    )
    assert moieties == {"1": frozenset({"base"}), "2": frozenset({"base"})}


def test_atc_propagation_keeps_provenance_and_refuses_ambiguity() -> None:
    specialities = [
        _speciality("10000001"),
        _speciality("10000002"),
        _speciality("10000003"),
        _speciality("10000004", ("ophtalmique",)),
        _speciality("10000005", ("ophtalmique",)),
        _speciality("10000006", ("orale",)),
        _speciality("10000007", ("orale",)),
    ]
    components = [
        _component("10000001", "A"),
        _component("10000003", "A"),
        _component("10000004", "T"),
        _component("10000005", "T"),
        _component("10000006", "T"),
        _component("10000007", "T"),
    ]
    generics = [
        GenericMembership(group_id=7, label="g", cis="10000001", kind=0, sort_no=1),
        GenericMembership(group_id=7, label="g", cis="10000002", kind=1, sort_no=2),
    ]
    direct = {"10000001": "N02BE01", "10000004": "S01ED01", "10000006": "C07AA06"}
    assigned, ambiguous = propagate(specialities, components, generics, direct)
    assert assigned["10000001"].source == "direct"
    assert (assigned["10000002"].atc, assigned["10000002"].source) == ("N02BE01", "generic_group")
    assert assigned["10000002"].evidence == "group:7"
    assert (assigned["10000003"].source, assigned["10000003"].evidence) == (
        "composition_route",
        "10000001",
    )
    # timolol: the route tells eye drops from tablets
    assert assigned["10000005"].atc == "S01ED01"
    assert assigned["10000007"].atc == "C07AA06"
    assert not ambiguous


def test_atc_propagation_leaves_conflicts_unassigned() -> None:
    specialities = [_speciality("1"), _speciality("2"), _speciality("3")]
    components = [_component(c, "X") for c in ("1", "2", "3")]
    assigned, ambiguous = propagate(specialities, components, [], {"1": "A01", "2": "B01"})
    assert "3" not in assigned
    assert ambiguous == {"3"}


def test_diff_catalog_records_status_price_and_supply() -> None:
    before = CatalogSnapshot(
        specialities={"1": "commercialisée", "2": "commercialisée"},
        presentations={CIP13: ("1", "Déclaration de commercialisation", 1000)},
        availability={("1", ""): (2, "Tension d'approvisionnement", "2025-01-01")},
    )
    after = CatalogSnapshot(
        specialities={"1": "non commercialisée", "3": "commercialisée"},
        presentations={CIP13: ("1", "Déclaration d'arrêt de commercialisation", 950)},
        availability={("1", CIP13): (1, "Rupture de stock", "2025-02-01")},
    )
    kinds = {(c.cis, c.kind, c.old, c.new) for c in diff_catalog(before, after)}
    assert ("1", HistoryKind.SPECIALITY_STATUS, "commercialisée", "non commercialisée") in kinds
    assert ("2", HistoryKind.REMOVED, "commercialisée", None) in kinds
    assert ("3", HistoryKind.ADDED, None, "commercialisée") in kinds
    assert ("1", HistoryKind.PRICE, "10.00", "9.50") in kinds
    assert ("1", HistoryKind.AVAILABILITY_ENDED, "Tension d'approvisionnement", None) in kinds
    assert any(k[1] is HistoryKind.AVAILABILITY_STARTED for k in kinds)
    first = diff_catalog(None, after)
    assert [c.kind for c in first] == [HistoryKind.AVAILABILITY_STARTED]
    assert diff_catalog(after, after) == []


def test_names_of_the_thesaurus() -> None:
    assert uninvert("VALPROÏQUE (ACIDE)") == "ACIDE VALPROÏQUE"
    assert uninvert("sodium (bicarbonate de)") == "bicarbonate de sodium"
    assert heading_members("VALPROÏQUE (ACIDE) ET, PAR EXTRAPOLATION, VALPROMIDE") == [
        "ACIDE VALPROÏQUE",
        "VALPROMIDE",
    ]
    assert heading_members("PHÉNOBARBITAL (ET, PAR EXTRAPOLATION, PRIMIDONE)") == [
        "PHÉNOBARBITAL",
        "PRIMIDONE",
    ]
    assert heading_members("GLÉCAPRÉVIR + PIBRENTASVIR") == ["GLÉCAPRÉVIR", "PIBRENTASVIR"]
    assert "AMLODIPINE" in name_keys("AMLODIPINE (BÉSILATE D')")
    assert "AMBROXOL" in name_keys("CHLORHYDRATE D'AMBROXOL")
    assert "PANTOPRAZOLE" in name_keys("PANTOPRAZOLE SODIQUE SESQUIHYDRATÉ")
    assert "CALCIUM" in name_keys("CARBONATE DE CALCIUM")
    assert "CALCIUM" not in name_keys("FOLINATE DE CALCIUM")
    assert "CALCIUM" not in name_keys("CALCIUM (FOLINATE DE)")
    assert "CALCIUM" in name_keys("CALCIUM (CARBONATE DE)")
    assert "SODIUM" not in name_keys("ALENDRONATE DE SODIUM TRIHYDRATÉ")
    assert split_members("(a, b (sel de), c)") == (["a", "b (sel de)", "c"], True)
    assert split_members("(adrenaline") == (["adrenaline"], False)
    assert split_see_also("Voir : a - b c") == ["a", "b c"]


def test_levels_with_conditions() -> None:
    conduct = (
        "Association déconseillée avec :\n- des doses anti-inflammatoires\n"
        "A prendre en compte avec :\n- des doses antiagrégantes"
    )
    levels, warnings = parse_levels("ASDEC - APEC", conduct)
    assert [(lv.level, lv.condition) for lv in levels] == [
        (Level.NOT_RECOMMENDED, "- des doses anti-inflammatoires"),
        (Level.TAKE_INTO_ACCOUNT, "- des doses antiagrégantes"),
    ]
    assert warnings == []
    single, _ = parse_levels("Association DECONSEILLEE", "Eviter.")
    assert [lv.level for lv in single] == [Level.NOT_RECOMMENDED]
    unsure, doubts = parse_levels("CI - PE", "Avec le méthotrexate à forte dose : ...")
    assert [lv.level for lv in unsure] == [Level.CONTRAINDICATION, Level.PRECAUTION]
    assert doubts
    assert "not separated" in doubts[0]
    assert parse_levels("PEUT-ÊTRE", "")[0] == []
    assert message("AMIODARONE", "SIMVASTATINE", single).startswith("Association déconseillée")


def _w(page: int, x: float, top: float, font: str, size: float, text: str) -> list[PdfWord]:
    words = []
    for word in text.split(" "):
        words.append(PdfWord(page, x, top, font, size, word))
        x += 6 * len(word) + 3
    return words


def test_parse_entries_reads_columns_by_font_and_position() -> None:
    words = [
        *_w(1, 70, 400, "Helvetica", 12, "Version : Septembre 2019"),
        *_w(2, 29, 48, "Helvetica-Bold", 10, "ACETAZOLAMIDE"),
        *_w(2, 37, 62, "Helvetica", 7, "Voir aussi : alcalinisants"),
        *_w(2, 32, 76.5, "Helvetica-Bold", 8, "+"),
        *_w(2, 40, 76, "Helvetica-BoldOblique", 8, "ACIDE ACETYLSALICYLIQUE"),
        *_w(2, 317, 89, "Helvetica-Bold", 7, "Association DECONSEILLEE"),
        *_w(2, 97, 89, "Helvetica", 7, "Majoration des effets"),
        *_w(2, 97, 97, "Helvetica", 7, "indésirables."),
        *_w(2, 32, 120, "Helvetica-Bold", 8, "+"),
        *_w(2, 40, 120, "Helvetica-BoldOblique", 8, "LITHIUM"),
        *_w(2, 317, 133, "Helvetica-Bold", 7, "Précaution d'emploi"),
        *_w(2, 97, 133, "Helvetica", 7, "Diminution de la lithémie."),
        *_w(2, 317, 141, "Helvetica", 7, "Surveillance stricte de la lithémie."),
        *_w(2, 72, 809, "IXIWAH+Arial", 8, "ANSM - Septembre 2019"),
    ]
    parsed = parse_entries(words)
    assert parsed.edition == "2019-09"
    assert parsed.warnings == ()
    assert [(h.name, h.note) for h in parsed.headings] == [
        ("ACETAZOLAMIDE", "Voir aussi : alcalinisants")
    ]
    first, second = parsed.entries
    assert (first.partner, first.level_text) == (
        "ACIDE ACETYLSALICYLIQUE",
        "Association DECONSEILLEE",
    )
    assert first.mechanism == "Majoration des effets\nindésirables."
    assert (second.partner, second.level_text, second.conduct) == (
        "LITHIUM",
        "Précaution d'emploi",
        "Surveillance stricte de la lithémie.",
    )


def test_atc_propagation_through_a_moiety_named_alike_under_another_code() -> None:
    """BDPM gives some moieties two substance codes; the same name carries the code."""
    specialities = [_speciality("10000001"), _speciality("10000002"), _speciality("10000003")]
    twin = msgspec.structs.replace(_component("10000002", "B"), substance_name="A")
    other = msgspec.structs.replace(_component("10000003", "C"), substance_name="Â")
    components = [_component("10000001", "A"), twin, other]
    assigned, ambiguous = propagate(specialities, components, [], {"10000001": "N06DA02"})
    assert (assigned["10000002"].atc, assigned["10000002"].source) == (
        "N06DA02",
        "composition_name",
    )
    assert assigned["10000002"].evidence == "10000001"
    assert assigned["10000003"].source == "composition_name"  # accents folded
    assert not ambiguous
