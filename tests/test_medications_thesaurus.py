"""The bundled ANSM thesaurus data: 30 well-known pairs against the PDF, lookups, provenance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from services.medications import current_thesaurus, interactions_for
from services.medications.logic import fold
from services.medications.models import Level
from services.medications.thesaurus import Thesaurus, bundled_path, decode
from services.medications.thesaurus_pdf import parse_entries, read_pdf_words

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
THESAURUS_PDF = SHARED / "ansm-thesaurus-2019-09" / "Thesaurus_09_2019.pdf"

CI = Level.CONTRAINDICATION
ASDEC = Level.NOT_RECOMMENDED
PE = Level.PRECAUTION
APEC = Level.TAKE_INTO_ACCOUNT

# (entry, partner, most severe level, page of the entry, level as printed on that page).
# Checked by hand against the PDF (2019-09 edition), independently of the parser.
SPOT_CHECK: list[tuple[str, str, Level, int, str]] = [
    ("AMIODARONE", "SIMVASTATINE", PE, 13, "Précaution d'emploi"),
    ("ACIDE ACETYLSALICYLIQUE", "ANTICOAGULANTS ORAUX", CI, 3, "CI - ASDEC - APEC"),
    ("ATORVASTATINE", "CLARITHROMYCINE", PE, 39, "Précaution d'emploi"),
    ("AMIODARONE", "DIGOXINE", PE, 12, "Précaution d'emploi"),
    ("ACIDE ACETYLSALICYLIQUE", "METHOTREXATE", CI, 4, "CI - PE"),
    ("ANTIVITAMINES K", "FLUCONAZOLE", PE, 34, "Précaution d'emploi"),
    ("FER", "FLUOROQUINOLONES", PE, 97, "Précaution d'emploi"),
    (
        "INHIBITEURS SÉLECTIFS DE LA RECAPTURE DE LA SÉROTONINE",
        "TRAMADOL",
        APEC,
        137,
        "A prendre en compte",
    ),
    (
        "BÊTA-BLOQUANTS DANS L'INSUFFISANCE CARDIAQUE",
        "VERAPAMIL",
        ASDEC,
        45,
        "Association DECONSEILLEE",
    ),
    ("PAMPLEMOUSSE (JUS ET FRUIT)", "SIMVASTATINE", ASDEC, 181, "Association DECONSEILLEE"),
    ("ALCOOL (BOISSON OU EXCIPIENT)", "METFORMINE", ASDEC, 9, "Association DECONSEILLEE"),
    ("CALCIUM", "DIGOXINE", CI, 50, "CI - PE"),
    (
        "ANTICOAGULANTS ORAUX",
        "ANTI-INFLAMMATOIRES NON STÉROÏDIENS",
        ASDEC,
        20,
        "Association DECONSEILLEE",
    ),
    (
        "LEVODOPA",
        "NEUROLEPTIQUES ANTIPSYCHOTIQUES (SAUF CLOZAPINE)",
        ASDEC,
        147,
        "Association DECONSEILLEE",
    ),
    ("PAROXETINE", "TAMOXIFENE", ASDEC, 182, "Association DECONSEILLEE"),
    ("ESTROPROGESTATIFS CONTRACEPTIFS", "MILLEPERTUIS", CI, 94, "CONTRE-INDICATION"),
    ("METHOTREXATE", "TRIMETHOPRIME", CI, 158, "CONTRE-INDICATION"),
    ("CICLOSPORINE", "SIMVASTATINE", CI, 58, "CONTRE-INDICATION"),
    ("INHIBITEURS PUISSANTS DU CYP3A4", "SIMVASTATINE", CI, 135, "CONTRE-INDICATION"),
    ("DIURÉTIQUES THIAZIDIQUES ET APPARENTÉS", "LITHIUM", ASDEC, 85, "Association DECONSEILLEE"),
    ("INHIBITEURS DE L'ENZYME DE CONVERSION", "LITHIUM", ASDEC, 126, "Association DECONSEILLEE"),
    ("ANTIVITAMINES K", "MILLEPERTUIS", CI, 34, "CONTRE-INDICATION"),
    ("ALLOPURINOL", "ANTIVITAMINES K", PE, 10, "Précaution d'emploi"),
    ("COLCHICINE", "MACROLIDES (SAUF SPIRAMYCINE)", CI, 66, "CONTRE-INDICATION"),
    ("DOMPERIDONE", "INHIBITEURS PUISSANTS DU CYP3A4", CI, 86, "CONTRE-INDICATION"),
    ("ANTIVITAMINES K", "MICONAZOLE", CI, 34, "CONTRE-INDICATION"),
    ("ATORVASTATINE", "ITRACONAZOLE", CI, 39, "CONTRE-INDICATION"),
    (
        "IMAO IRRÉVERSIBLES",
        "INHIBITEURS SÉLECTIFS DE LA RECAPTURE DE LA SÉROTONINE",
        CI,
        115,
        "CONTRE-INDICATION",
    ),
    ("ACIDE ACETYLSALICYLIQUE", "CLOPIDOGREL", ASDEC, 3, "ASDEC - PE"),
    ("APIXABAN", "RIFAMPICINE", ASDEC, 37, "Association DECONSEILLEE"),
]


@pytest.fixture(scope="module")
def thesaurus() -> Thesaurus:
    return current_thesaurus()


def _pair(thesaurus: Thesaurus, a: str, b: str):  # type: ignore[no-untyped-def]
    keys = {fold(a), fold(b)}
    found = [i for i in thesaurus.data.interactions if {i.a, i.b} == keys]
    assert len(found) == 1, f"{a} + {b}: {len(found)} pairs"
    return found[0]


@pytest.mark.parametrize(
    ("a", "b", "level", "page", "printed"), SPOT_CHECK, ids=lambda v: str(v)[:20]
)
def test_spot_check_levels(
    thesaurus: Thesaurus, a: str, b: str, level: Level, page: int, printed: str
) -> None:
    item = _pair(thesaurus, a, b)
    assert item.level is level
    assert page in [source.page for source in item.sources]
    assert item.message  # the appliance's own wording
    assert item.mechanism  # ANSM's wording, kept for "show the source"


def test_bundled_file_is_versioned_and_complete(thesaurus: Thesaurus) -> None:
    data = thesaurus.data
    assert bundled_path().name == "ansm-thesaurus-2019-09.json"
    assert data.edition == "2019-09"
    assert "2019-09" in data.source
    assert data.stats["pairs"] >= 1500
    assert data.stats["classes"] >= 160
    assert data.unmapped  # every unmapped name is listed, none silently dropped
    for item in data.interactions:
        assert item.sources
        assert all(1 < s.page <= 249 for s in item.sources)
        assert item.level in set(Level)
    conditional = _pair(thesaurus, "ACIDE ACETYLSALICYLIQUE", "ANTICOAGULANTS ORAUX")
    assert [lv.level for lv in conditional.levels] == [CI, ASDEC, APEC]
    assert "anti-inflammatoires" in conditional.levels[0].condition
    assert bundled_path().stat().st_size < 5_000_000


def test_interactions_for_atc_codes_go_through_classes(thesaurus: Thesaurus) -> None:
    # amiodarone + simvastatin: a direct pair
    found = interactions_for({"amiodarone": ["C01BD01"], "simvastatine": ["C10AA01"]})
    assert [(v.level, v.edition) for v in found] == [("precaution-emploi", "2019-09")]
    assert found[0].source_text is None
    # acenocoumarol + aspirin: through the class « anticoagulants oraux »
    found = interactions_for(
        {"acénocoumarol": ["B01AA07"], "aspirine": ["B01AC06"]}, with_source=True
    )
    assert found
    assert found[0].level == "contre-indication"
    assert any("ANTICOAGULANTS ORAUX" in via for via in found[0].via)
    assert found[0].source_text is not None
    assert interactions_for({"paracétamol": ["N02BE01"], "amlodipine": ["C08CA01"]}) == []


def test_same_substance_twice_is_not_an_interaction(thesaurus: Thesaurus) -> None:
    keys = thesaurus.keys_for_atc("B01AA07")
    assert "ANTICOAGULANTS ORAUX" in keys
    assert not [v for v in thesaurus.check({"a": keys, "b": keys}) if v.a == v.b]


def test_lookups_are_fast(thesaurus: Thesaurus) -> None:
    started = time.perf_counter()
    for _ in range(200):
        thesaurus.check(
            {"a": thesaurus.keys_for_atc("C01BD01"), "b": thesaurus.keys_for_atc("C10AA01")}
        )
    assert time.perf_counter() - started < 2.0
    assert decode(bundled_path().read_bytes()).edition == "2019-09"


@pytest.mark.skipif(not THESAURUS_PDF.exists(), reason="shared ANSM PDF not available")
def test_spot_check_against_the_pdf() -> None:
    """The printed level sits under the partner on the cited page (pdfplumber's plain text,
    not the font-based parser), and the parser reads the same pages the same way."""
    import pdfplumber

    pages = sorted({page for *_, page, _ in SPOT_CHECK})
    with pdfplumber.open(str(THESAURUS_PDF)) as pdf:
        texts = {page: fold(pdf.pages[page - 1].extract_text() or "") for page in pages}
    for a, b, _level, page, printed in SPOT_CHECK:
        text = texts[page]
        assert fold(printed) in text, (a, b, page)
        assert fold(a) in text or fold(b) in text, (a, b, page)
    # with the page before each one, where the entry heading may stand
    parsed = parse_entries(read_pdf_words(THESAURUS_PDF, pages={p - 1 for p in pages} | set(pages)))
    printed_by_pair = {
        frozenset((fold(e.entry), fold(e.partner))): e.level_text for e in parsed.entries
    }
    # An entry whose heading stands more than a page earlier is read under another heading
    # here (those pages are not parsed); the others must read exactly as printed.
    checked = 0
    for a, b, _level, _page, printed in SPOT_CHECK:
        found = printed_by_pair.get(frozenset((fold(a), fold(b))))
        if found is not None:
            assert found == printed, (a, b)
            checked += 1
    assert checked >= 25


def test_an_edition_imported_on_site_takes_precedence(platform: Any) -> None:
    import msgspec

    from services.medications import knowledge_editions
    from services.medications.store import record_thesaurus
    from services.medications.thesaurus import encode

    bundled = decode(bundled_path().read_bytes())
    newer = msgspec.structs.replace(
        bundled, edition="2099-01", interactions=bundled.interactions[:5]
    )
    assert current_thesaurus(platform.store).edition == "2019-09"
    record_thesaurus(platform.store, "2099-01", "0" * 64, encode(newer), "system:cli")
    assert current_thesaurus(platform.store).edition == "2099-01"
    assert len(current_thesaurus(platform.store).data.interactions) == 5
    assert knowledge_editions(platform.store)["thesaurus"] == "ansm-2099-01"
    assert current_thesaurus().edition == "2019-09"
