"""SESAM-Vitale pure rules: tariff data, pricing (amounts never wrong), FSE signature with a
real key from a test CA, and the NOEMIE-style return files."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from services.sesam_vitale.logic import (
    DEFAULT_TARIFF,
    BillingRuleError,
    ReturnFormatError,
    TariffError,
    can_move,
    cents,
    coverage_facts,
    edition_in_force,
    fse_signed_bytes,
    load_tariff,
    parse_return,
    parse_tariff,
    price_step,
    share,
    write_return,
)
from services.sesam_vitale.models import (
    ArlRecord,
    Beneficiary,
    CoverageFacts,
    Fse,
    PaymentRecord,
    Pricing,
)
from services.sesam_vitale.signing import SoftwareKeySigner, verify_signature

# A TEST tariff: fictitious amounts, flagged test_only, used only to exercise the pipeline.
TEST_TARIFF = textwrap.dedent(
    """
    schema_version = 1

    [[editions]]
    id = "test-tariff"
    valid_from = 2024-01-01
    title = "TEST TARIFF - fictitious amounts for tests only"
    sources = ["tests/test_sesam_logic.py"]
    test_only = true

    [[editions.acts]]
    key = "adhesion"
    code = "TAC"
    label = "Adhésion (test)"
    bpm_steps = ["adhesion"]
    interview = false
    amount_eur = 0.01
    amo_rate = 100
    sources = ["test"]

    [[editions.acts]]
    key = "recueil"
    code = "XR1"
    label = "Recueil (test)"
    bpm_steps = ["recueil"]
    interview = true
    amount_eur = 33.33
    amo_rate = 70
    sources = ["test"]

    [[editions.acts]]
    key = "analyse"
    code = "XA1"
    label = "Analyse (test)"
    bpm_steps = ["analyse"]
    interview = false
    amount_eur = 20.0
    amo_rate = 70
    sources = ["test"]

    [[editions.acts]]
    key = "transmission"
    label = "Transmission (test)"
    bpm_steps = ["transmission"]
    interview = false
    billed = false
    sources = ["test"]
    doubt = "part of the analysis"

    [editions.remote]
    code = "TPH"
    label = "À distance (test)"
    amount_eur = 0.0
    sources = ["test"]
    """
)

OPEN = CoverageFacts(amo_open=True, ald_open=False, amc_open=False)


def site_tariff(tmp_path: Path) -> Path:
    path = tmp_path / "site-tariff.toml"
    path.write_text(TEST_TARIFF, encoding="utf-8")
    return path


def make_test_ca(tmp: Path) -> tuple[x509.Certificate, SoftwareKeySigner, bytes, bytes]:
    """A test CA and a pharmacist signing key it certified (like a CPS signature key)."""
    now = datetime.now(UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AC TEST Hygie")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "Claire PHARMACIENNE"),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, "810000000006"),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    return ca, SoftwareKeySigner(key_pem, cert_pem), key_pem, cert_pem


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[x509.Certificate, SoftwareKeySigner]:
    ca, signer, _, _ = make_test_ca(tmp_path_factory.mktemp("ca"))
    return ca, signer


# --------------------------------------------------------------------------- tariff data


def test_shipped_tariff_cites_its_sources_and_never_invents_an_amount() -> None:
    editions = load_tariff()
    edition = edition_in_force(editions, date(2025, 3, 1))
    assert edition is not None
    assert edition.journal_officiel == "JORF n°0160 du 7 juillet 2024"
    assert edition.valid_from == date(2025, 1, 8)
    tac = next(a for a in edition.acts if a.key == "adhesion")
    assert (tac.code, tac.amo_rate) == ("TAC", 100)
    assert edition.remote is not None
    assert edition.remote.code == "TPH"
    for act in edition.acts:
        assert act.sources
        if not act.confirmed:
            assert act.doubt, act.key
    # Nothing before the avenant: no edition, no price.
    assert edition_in_force(editions, date(2024, 12, 31)) is None


def test_unconfirmed_act_is_refused_never_priced() -> None:
    editions = load_tariff()
    for step in ("adhesion", "recueil", "analyse", "conseil", "suivi", "observance"):
        with pytest.raises(BillingRuleError) as refused:
            price_step(
                editions,
                step,
                act_date=date(2025, 3, 1),
                remote=False,
                coverage=OPEN,
                exoneration="none",
            )
        assert refused.value.slug in ("tariff-unconfirmed", "step-not-billable")
        assert refused.value.status == 409


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("amount_eur = 33.33", "amount_eur = 33.333", "in cents"),
        ('code = "XA1"', 'code = "XR1"', "used twice"),
        ("schema_version = 1", "schema_version = 2", "schema_version"),
        ('sources = ["tests/test_sesam_logic.py"]', "sources = []", "no source"),
        ("amo_rate = 70", "amo_rate = 170", "amo_rate"),
    ],
)
def test_malformed_tariff_is_refused_with_the_file_name(
    tmp_path: Path, old: str, new: str, match: str
) -> None:
    assert old in TEST_TARIFF
    with pytest.raises(TariffError, match=match) as refused:
        parse_tariff(TEST_TARIFF.replace(old, new, 1), tmp_path / "bad.toml")
    assert "bad.toml" in str(refused.value)


def test_unconfirmed_act_without_doubt_is_refused(tmp_path: Path) -> None:
    text = TEST_TARIFF.replace('doubt = "part of the analysis"\n', "").replace(
        "billed = false", "billed = true"
    )
    with pytest.raises(TariffError, match="says no doubt"):
        parse_tariff(text, tmp_path / "t.toml")


def test_site_tariff_wins_on_its_dates(tmp_path: Path) -> None:
    editions = load_tariff(site_tariff(tmp_path))
    assert edition_in_force(editions, date(2024, 6, 1)).id == "test-tariff"  # type: ignore[union-attr]
    # From the avenant's date on, the shipped (later) edition is in force again.
    assert edition_in_force(editions, date(2025, 6, 1)).id == "convention-2022-avenant-1"  # type: ignore[union-attr]
    assert DEFAULT_TARIFF.is_file()


# --------------------------------------------------------------------------- pricing


def test_pricing_follows_the_tariff_and_coverage(tmp_path: Path) -> None:
    editions = load_tariff(site_tariff(tmp_path))
    on = date(2024, 6, 1)
    tac = price_step(
        editions, "adhesion", act_date=on, remote=False, coverage=OPEN, exoneration="none"
    )
    assert (tac.total_cents, tac.amo_cents, tac.patient_cents) == (1, 1, 0)
    assert tac.test_tariff
    recueil = price_step(
        editions, "recueil", act_date=on, remote=False, coverage=OPEN, exoneration="none"
    )
    # 70 % of 33.33 € = 23.331 → 23.33 €, the patient pays the rest.
    assert (recueil.total_cents, recueil.amo_cents, recueil.patient_cents) == (3333, 2333, 1000)
    with_amc = msgspec.structs.replace(OPEN, amc_open=True)
    covered = price_step(
        editions, "recueil", act_date=on, remote=False, coverage=with_amc, exoneration="none"
    )
    assert (covered.amc_cents, covered.patient_cents) == (1000, 0)
    ald = msgspec.structs.replace(OPEN, ald_open=True)
    exonerated = price_step(
        editions, "recueil", act_date=on, remote=False, coverage=ald, exoneration="ald"
    )
    assert (exonerated.amo_cents, exonerated.patient_cents) == (3333, 0)
    remote = price_step(
        editions, "recueil", act_date=on, remote=True, coverage=OPEN, exoneration="none"
    )
    assert [line.code for line in remote.lines] == ["XR1", "TPH"]
    assert remote.total_cents == 3333


@pytest.mark.parametrize(
    ("step", "remote", "coverage", "exoneration", "slug"),
    [
        (
            "recueil",
            False,
            CoverageFacts(amo_open=False, ald_open=False, amc_open=True),
            "none",
            "no-coverage",
        ),
        ("recueil", False, OPEN, "ald", "no-ald"),
        ("analyse", True, OPEN, "none", "remote-not-allowed"),
        ("transmission", False, OPEN, "none", "step-not-billable"),
        ("observance", False, OPEN, "none", "step-not-billable"),
    ],
)
def test_pricing_refusals(
    tmp_path: Path, step: str, remote: bool, coverage: CoverageFacts, exoneration: str, slug: str
) -> None:
    editions = load_tariff(site_tariff(tmp_path))
    with pytest.raises(BillingRuleError) as refused:
        price_step(
            editions,
            step,  # type: ignore[arg-type]
            act_date=date(2024, 6, 1),
            remote=remote,
            coverage=coverage,
            exoneration=exoneration,  # type: ignore[arg-type]
        )
    assert refused.value.slug == slug
    assert str(refused.value)  # a French sentence for the counter


@settings(max_examples=300, deadline=None)
@given(
    amount=st.integers(min_value=0, max_value=10_000_000),
    rate=st.integers(min_value=0, max_value=100),
)
def test_shares_always_add_up_to_the_total(amount: int, rate: int) -> None:
    amo = share(amount, rate)
    assert 0 <= amo <= amount
    assert abs(amo * 100 - amount * rate) <= 50  # half a cent at most
    assert cents(amount / 100) == amount


def test_coverage_facts_from_record_and_adri() -> None:
    from services.patients.models import AldExemption, Amc, Amo, Coverage
    from services.sesam_vitale.models import RightsAnswer

    coverage = Coverage(
        amo=Amo(regime="01", caisse="751", centre="0001", valid_until=date(2025, 1, 31)),
        ald=(AldExemption(number=8, valid_until=date(2026, 1, 1)),),
        amc=Amc(organisation="Mutuelle", valid_until=date(2024, 12, 31)),
    )
    facts = coverage_facts(coverage, date(2025, 1, 15))
    assert (facts.amo_open, facts.ald_open, facts.amc_open) == (True, True, False)
    assert not coverage_facts(coverage, date(2025, 2, 1)).amo_open
    renewed = RightsAnswer(status="found", rights_from=date(2020, 1, 1), rights_until=None)
    assert coverage_facts(coverage, date(2025, 2, 1), renewed).amo_open
    assert not coverage_facts(
        coverage, date(2025, 1, 15), RightsAnswer(status="not_found")
    ).amo_open
    assert not coverage_facts(Coverage(), date(2025, 1, 15)).amo_open


def test_state_machine() -> None:
    assert can_move("created", "signed")
    assert not can_move("created", "sent")
    assert not can_move("paid", "rejected")
    assert can_move("acknowledged", "paid")


# --------------------------------------------------------------------------- signature


def sample_fse(tmp_path: Path) -> Fse:
    editions = load_tariff(site_tariff(tmp_path))
    pricing = price_step(
        editions,
        "recueil",
        act_date=date(2024, 6, 1),
        remote=False,
        coverage=OPEN,
        exoneration="none",
    )
    return Fse(
        number=1,
        patient_id="p",
        beneficiary=Beneficiary(nir="248027512345642", birth_date=date(1948, 2, 14)),
        act_date=date(2024, 6, 1),
        bpm_cycle_id="c",
        bpm_step="recueil",
        remote=False,
        pricing=pricing,
        pharmacy_name="Pharmacie",
        pharmacy_am_number="750000001",
        executant="u",
        created_at=datetime.now(UTC),
    )


def test_signature_verifies_and_tampering_is_detected(
    tmp_path: Path, test_ca: tuple[x509.Certificate, SoftwareKeySigner]
) -> None:
    ca, signer = test_ca
    fse = sample_fse(tmp_path)
    signature = signer.sign(fse_signed_bytes(fse))
    assert signature.signer_rpps == "10000000006"
    assert verify_signature(fse_signed_bytes(fse), signature, [ca]) is None
    # The state fields are outside the signed bytes: sending does not break the signature.
    sent = msgspec.structs.replace(fse, state="sent", signature=signature, lot_id="l")
    assert verify_signature(fse_signed_bytes(sent), signature, [ca]) is None
    tampered = msgspec.structs.replace(
        fse, pricing=msgspec.structs.replace(fse.pricing, amo_cents=fse.pricing.amo_cents + 1)
    )
    assert verify_signature(fse_signed_bytes(tampered), signature, [ca]) == (
        "the signature does not match the FSE"
    )
    other_ca, _, _, _ = make_test_ca(tmp_path)
    assert "trusted" in (verify_signature(fse_signed_bytes(fse), signature, [other_ca]) or "")


# --------------------------------------------------------------------------- returns


def test_return_file_round_trip() -> None:
    acks = [ArlRecord(lot_id="L1", accepted=True, code="000", label="Lot accepté")]
    pays = [
        PaymentRecord(
            lot_id="L1",
            fse_id="F1",
            fse_number=7,
            paid=True,
            amount_cents=2333,
            payment_date=date(2025, 3, 4),
            code="000",
            label="Paiement",
        ),
        PaymentRecord(
            lot_id="L1",
            fse_id="F2",
            fse_number=8,
            paid=False,
            amount_cents=0,
            payment_date=None,
            code="DRT",
            label="Droits | non ouverts",
        ),
    ]
    text = write_return("SIM", date(2025, 3, 4), acks, pays)
    parsed = parse_return(text)
    assert parsed.acks == tuple(acks)
    assert parsed.payments[0] == pays[0]
    assert parsed.payments[1].label == "Droits / non ouverts"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", "line 1"),
        ("000|NOEMIE-HYGIE|1|SIM|20250304\n999|0\nextra\n", "trailer"),
        ("000|OTHER|1|SIM|20250304\n999|0\n", "header"),
        ("000|NOEMIE-HYGIE|2|SIM|20250304\n999|0\n", "version"),
        ("000|NOEMIE-HYGIE|1|SIM|20250304\n999|1\n", "counts 1"),
        ("000|NOEMIE-HYGIE|1|SIM|20251304\n999|0\n", "line 1"),
        ("000|NOEMIE-HYGIE|1|SIM|20250304\nXYZ|1\n999|1\n", "line 2: unknown"),
        ("000|NOEMIE-HYGIE|1|SIM|20250304\nARL|L|PEUT-ETRE|0|x\n999|1\n", "line 2"),
        ("000|NOEMIE-HYGIE|1|SIM|20250304\nRSP|L|F|1|PAYE|12|bad|0|x\n999|1\n", "line 2"),
        ("000|NOEMIE-HYGIE|1|SIM|20250304\nRSP|L|F|1|PAYE|12||0|x\n999|1\n", "payment date"),
        ("000|NOEMIE-HYGIE|1|SIM|20250304\nRSP|L|F|1|PAYE|-5|20250304|0|x\n999|1\n", "amount"),
    ],
)
def test_malformed_return_files_name_the_line(text: str, where: str) -> None:
    with pytest.raises(ReturnFormatError, match=where):
        parse_return(text)


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(min_value=0, max_value=100_000),
    rate=st.integers(min_value=0, max_value=100),
    amo=st.booleans(),
    ald=st.booleans(),
    amc=st.booleans(),
    css=st.booleans(),
    exonerate=st.booleans(),
)
def test_priced_fse_shares_always_match_the_tariff(
    amount: int, rate: int, amo: bool, ald: bool, amc: bool, css: bool, exonerate: bool
) -> None:
    """Whatever the coverage, an FSE is either refused or priced at exactly the tariff's
    amount, with shares that add up and follow the rate (never a wrong amount)."""
    edition = parse_tariff(
        TEST_TARIFF.replace("amount_eur = 33.33", f"amount_eur = {amount / 100:.2f}").replace(
            "amo_rate = 70", f"amo_rate = {rate}", 1
        ),
        Path("generated.toml"),
    )
    coverage = CoverageFacts(amo_open=amo, ald_open=ald, amc_open=amc, css=css)

    def price() -> Pricing:
        return price_step(
            edition,
            "recueil",
            act_date=date(2024, 6, 1),
            remote=False,
            coverage=coverage,
            exoneration="ald" if exonerate else "none",
        )

    if not amo or (exonerate and not ald):
        with pytest.raises(BillingRuleError):
            price()
        return
    priced = price()
    (line,) = priced.lines
    assert line.amount_cents == priced.total_cents == amount
    assert line.amo_rate == (100 if exonerate else rate)
    assert line.amo_cents == share(amount, line.amo_rate)
    assert priced.amo_cents + priced.amc_cents + priced.patient_cents == amount
    if amc or css:
        assert priced.patient_cents == 0
    else:
        assert priced.amc_cents == 0
