"""Pure rules of SESAM-Vitale billing: tariff data, pricing of an act, FSE signing bytes,
and the NOEMIE-style return files (writer and parser). No I/O here except reading the
tariff file in :func:`load_tariff`.

Money is integer cents: the share of the Assurance Maladie obligatoire (AMO) is the total
times the rate, rounded half up to the cent; the complementary (AMC) or the patient pays the
rest, so the three shares always add up to the total, whatever the rate.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import msgspec

from services.patients.models import Coverage
from services.sesam_vitale.models import (
    ArlRecord,
    BpmStepKind,
    CoverageFacts,
    Exoneration,
    Fse,
    PaymentRecord,
    PriceLine,
    Pricing,
    ReturnFile,
    RightsAnswer,
    TariffAct,
    TariffEdition,
    TariffFile,
)

DEFAULT_TARIFF = Path(__file__).parent / "data" / "pharmacist_acts.toml"
ALD_RATE = 100
"""Exonération du ticket modérateur: an act related to the ALD is covered at 100 % of the
tarif de base (code de la sécurité sociale, art. L160-14 3°)."""


class TariffError(Exception):
    """The tariff file is unreadable or breaks a rule; the message names the file."""


class BillingRuleError(Exception):
    """An act that cannot be billed; ``status`` is the HTTP answer, ``slug`` the problem type,
    the message is French, for the counter."""

    def __init__(self, status: int, slug: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.slug = slug


# --------------------------------------------------------------------------- tariff


def _amount_ok(value: float) -> bool:
    return value >= 0 and Decimal(str(value)) == Decimal(str(value)).quantize(Decimal("0.01"))


def _validate_edition(edition: TariffEdition, path: Path) -> list[str]:
    problems: list[str] = []
    where = f"{path}: edition {edition.id!r}"
    if not edition.sources:
        problems.append(f"{where}: no source")
    codes: set[str] = set()
    steps: set[str] = set()
    for act in edition.acts:
        if not act.sources:
            problems.append(f"{where}: act {act.key!r} has no source")
        if act.amount_eur is not None and not _amount_ok(act.amount_eur):
            problems.append(f"{where}: act {act.key!r}: amount_eur must be >= 0, in cents")
        if act.billed and not act.confirmed and not act.doubt:
            problems.append(
                f"{where}: act {act.key!r} lacks code, amount_eur or amo_rate and says no doubt"
            )
        if act.code is not None:
            if act.code in codes:
                problems.append(f"{where}: code {act.code!r} used twice")
            codes.add(act.code)
        for step in act.bpm_steps:
            if step in steps:
                problems.append(f"{where}: BPM step {step!r} mapped twice")
            steps.add(step)
    remote = edition.remote
    if remote is not None:
        if remote.amount_eur is not None and not _amount_ok(remote.amount_eur):
            problems.append(f"{where}: remote amount_eur must be >= 0, in cents")
        if remote.amount_eur is None and not remote.doubt:
            problems.append(f"{where}: remote code without amount says no doubt")
    return problems


def parse_tariff(text: str, path: Path) -> tuple[TariffEdition, ...]:
    """Editions of one tariff file, validated (raises :class:`TariffError`)."""
    try:
        raw = tomllib.loads(text)
        parsed = msgspec.convert(raw, TariffFile)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise TariffError(f"{path}: {exc}") from exc
    problems: list[str] = []
    ids = [e.id for e in parsed.editions]
    if len(set(ids)) != len(ids):
        problems.append(f"{path}: edition ids must be unique")
    for edition in parsed.editions:
        problems.extend(_validate_edition(edition, path))
    if problems:
        raise TariffError("; ".join(problems))
    return tuple(msgspec.structs.replace(e, origin=str(path)) for e in parsed.editions)


def load_tariff(site_file: Path | None = None) -> tuple[TariffEdition, ...]:
    """The shipped editions, then the site's (which win on the same dates)."""
    paths = [DEFAULT_TARIFF] + ([site_file] if site_file is not None else [])
    editions: list[TariffEdition] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TariffError(f"{path}: cannot be read ({exc})") from exc
        editions.extend(parse_tariff(text, path))
    return tuple(editions)


def edition_in_force(editions: Sequence[TariffEdition], on: date) -> TariffEdition | None:
    """The latest edition valid on ``on``; on a tie, the one loaded last (the site's)."""
    best: TariffEdition | None = None
    for edition in editions:
        if edition.valid_from <= on and (best is None or edition.valid_from >= best.valid_from):
            best = edition
    return best


def act_for_step(edition: TariffEdition, step: BpmStepKind) -> TariffAct | None:
    return next((a for a in edition.acts if step in a.bpm_steps), None)


# --------------------------------------------------------------------------- pricing


def cents(amount_eur: float) -> int:
    return int((Decimal(str(amount_eur)) * 100).to_integral_value(ROUND_HALF_UP))


def share(total_cents: int, rate: int) -> int:
    """``total × rate %`` rounded half up to the cent (exact: decimal arithmetic)."""
    return int((Decimal(total_cents) * rate / 100).to_integral_value(ROUND_HALF_UP))


def _line(code: str, label: str, amount: int, rate: int, coverage: CoverageFacts) -> PriceLine:
    amo = share(amount, rate)
    rest = amount - amo
    amc = rest if (coverage.amc_open or coverage.css) else 0
    return PriceLine(
        code=code,
        label=label,
        amount_cents=amount,
        amo_rate=rate,
        amo_cents=amo,
        amc_cents=amc,
        patient_cents=rest - amc,
    )


def price_step(
    editions: Sequence[TariffEdition],
    step: BpmStepKind,
    *,
    act_date: date,
    remote: bool,
    coverage: CoverageFacts,
    exoneration: Exoneration,
) -> Pricing:
    """The FSE lines of one BPM step done on ``act_date``, or :class:`BillingRuleError`.

    Refuses (never guesses): no AMO rights on that date, an ALD exoneration without an ALD
    in force, an act whose code or amount the tariff data does not confirm, a remote act
    for a step that is not an entretien or without a confirmed remote code amount.
    """
    if not coverage.amo_open:
        raise BillingRuleError(
            409,
            "no-coverage",
            "Aucun droit à l'Assurance Maladie obligatoire n'est ouvert à la date de l'acte : "
            "vérifiez les droits (carte Vitale ou ADRi) avant de facturer.",
        )
    if exoneration == "ald" and not coverage.ald_open:
        raise BillingRuleError(
            409,
            "no-ald",
            "Le patient n'a pas d'ALD en cours à la date de l'acte : l'exonération ALD "
            "ne peut pas être appliquée.",
        )
    edition = edition_in_force(editions, act_date)
    if edition is None:
        raise BillingRuleError(
            409, "tariff-missing", f"Aucune tarification en vigueur le {act_date:%d/%m/%Y}."
        )
    act = act_for_step(edition, step)
    if act is None or not act.billed:
        raise BillingRuleError(
            409,
            "step-not-billable",
            f"L'étape « {step} » du bilan partagé de médication ne se facture pas seule.",
        )
    if not act.confirmed:
        raise BillingRuleError(
            409,
            "tariff-unconfirmed",
            f"Le code ou le tarif de l'acte « {act.label} » n'est pas confirmé dans les "
            f"données tarifaires ({edition.id}) : {act.doubt or 'donnée manquante'}",
        )
    assert act.code is not None
    assert act.amount_eur is not None
    assert act.amo_rate is not None
    rate = ALD_RATE if exoneration == "ald" else act.amo_rate
    lines = [_line(act.code, act.label, cents(act.amount_eur), rate, coverage)]
    if remote:
        if not act.interview:
            raise BillingRuleError(
                400,
                "remote-not-allowed",
                f"L'étape « {act.label} » n'est pas un entretien : elle ne se fait pas à distance.",
            )
        code = edition.remote
        if code is None or code.amount_eur is None:
            raise BillingRuleError(
                409,
                "tariff-unconfirmed",
                "Le tarif du code d'entretien à distance n'est pas confirmé dans les données "
                f"tarifaires ({edition.id}) : {code.doubt if code else 'code absent'}",
            )
        lines.append(_line(code.code, code.label, cents(code.amount_eur), rate, coverage))
    return Pricing(
        edition_id=edition.id,
        act_key=act.key,
        lines=tuple(lines),
        total_cents=sum(line.amount_cents for line in lines),
        amo_cents=sum(line.amo_cents for line in lines),
        amc_cents=sum(line.amc_cents for line in lines),
        patient_cents=sum(line.patient_cents for line in lines),
        exoneration=exoneration,
        test_tariff=edition.test_only,
    )


# --------------------------------------------------------------------------- signing


def fse_signed_bytes(fse: Fse) -> bytes:
    """The canonical bytes a signature covers: the FSE without its state, signature, lot
    and return fields (which change after signing), as compact JSON in field order."""
    content = msgspec.structs.replace(
        fse,
        state="created",
        signature=None,
        lot_id=None,
        rejection_code=None,
        rejection_label=None,
        paid_cents=None,
        paid_on=None,
    )
    return msgspec.json.encode(content)


# --------------------------------------------------------------------------- returns

RETURN_HEADER = "000"
RETURN_ARL = "ARL"
RETURN_RSP = "RSP"
RETURN_TRAILER = "999"
RETURN_FORMAT = "NOEMIE-HYGIE"
RETURN_VERSION = "1"


class ReturnFormatError(Exception):
    """A return file that does not follow the format; the message names the line."""


def write_return(
    emitter: str,
    created_on: date,
    acks: Iterable[ArlRecord],
    payments: Iterable[PaymentRecord],
) -> str:
    """A return file (see docs/sesam_vitale.md, « Return files »)."""
    lines = [f"{RETURN_HEADER}|{RETURN_FORMAT}|{RETURN_VERSION}|{emitter}|{created_on:%Y%m%d}"]
    for ack in acks:
        status = "ACCEPTE" if ack.accepted else "REJETE"
        lines.append(f"{RETURN_ARL}|{ack.lot_id}|{status}|{ack.code}|{_clean(ack.label)}")
    for pay in payments:
        status = "PAYE" if pay.paid else "REJET"
        when = f"{pay.payment_date:%Y%m%d}" if pay.payment_date else ""
        lines.append(
            f"{RETURN_RSP}|{pay.lot_id}|{pay.fse_id}|{pay.fse_number}|{status}|"
            f"{pay.amount_cents}|{when}|{pay.code}|{_clean(pay.label)}"
        )
    lines.append(f"{RETURN_TRAILER}|{len(lines) - 1}")
    return "\n".join(lines) + "\n"


def _clean(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ").replace("\r", " ")


def _date(value: str, lineno: int) -> date:
    if len(value) != 8 or not value.isdigit():
        raise ReturnFormatError(f"line {lineno}: date {value!r} is not AAAAMMJJ")
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError as exc:
        raise ReturnFormatError(f"line {lineno}: date {value!r}: {exc}") from exc


def _int(value: str, lineno: int, what: str, maximum: int = 100_000_000) -> int:
    if not value.isdigit() or len(value) > 12 or int(value) > maximum:
        raise ReturnFormatError(f"line {lineno}: {what} {value!r} is not a number")
    return int(value)


def parse_return(text: str) -> ReturnFile:
    """Parse a return file strictly: header first, trailer last with the record count, every
    field checked; raises :class:`ReturnFormatError` naming the line."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        raise ReturnFormatError("line 1: a return file has a header and a trailer at least")
    head = lines[0].split("|")
    if len(head) != 5 or head[0] != RETURN_HEADER or head[1] != RETURN_FORMAT:
        raise ReturnFormatError(f"line 1: header must be '000|{RETURN_FORMAT}|1|EMITTER|DATE'")
    if head[2] != RETURN_VERSION:
        raise ReturnFormatError(f"line 1: format version {head[2]!r} is not supported")
    emitter, created_on = head[3], _date(head[4], 1)
    tail = lines[-1].split("|")
    if len(tail) != 2 or tail[0] != RETURN_TRAILER:
        raise ReturnFormatError(f"line {len(lines)}: trailer must be '999|COUNT'")
    if _int(tail[1], len(lines), "record count") != len(lines) - 2:
        raise ReturnFormatError(
            f"line {len(lines)}: trailer counts {tail[1]} records, the file has {len(lines) - 2}"
        )
    acks: list[ArlRecord] = []
    payments: list[PaymentRecord] = []
    for lineno, line in enumerate(lines[1:-1], start=2):
        fields = line.split("|")
        kind = fields[0]
        if kind == RETURN_ARL:
            if len(fields) != 5 or fields[2] not in ("ACCEPTE", "REJETE") or not fields[1]:
                raise ReturnFormatError(f"line {lineno}: ARL|LOT|ACCEPTE or REJETE|CODE|LABEL")
            acks.append(
                ArlRecord(
                    lot_id=fields[1],
                    accepted=fields[2] == "ACCEPTE",
                    code=fields[3],
                    label=fields[4],
                )
            )
        elif kind == RETURN_RSP:
            if len(fields) != 9 or fields[4] not in ("PAYE", "REJET") or not fields[2]:
                raise ReturnFormatError(
                    f"line {lineno}: RSP|LOT|FSE|NUMBER|PAYE or REJET|CENTS|DATE|CODE|LABEL"
                )
            paid = fields[4] == "PAYE"
            when = _date(fields[6], lineno) if fields[6] else None
            if paid and when is None:
                raise ReturnFormatError(f"line {lineno}: a paid FSE needs its payment date")
            payments.append(
                PaymentRecord(
                    lot_id=fields[1],
                    fse_id=fields[2],
                    fse_number=_int(fields[3], lineno, "FSE number", 10**12),
                    paid=paid,
                    amount_cents=_int(fields[5], lineno, "amount"),
                    payment_date=when,
                    code=fields[7],
                    label=fields[8],
                )
            )
        else:
            raise ReturnFormatError(f"line {lineno}: unknown record type {kind[:10]!r}")
    return ReturnFile(
        emitter=emitter, created_on=created_on, acks=tuple(acks), payments=tuple(payments)
    )


# --------------------------------------------------------------------------- states

FSE_TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"signed"}),
    "signed": frozenset({"sent"}),
    "sent": frozenset({"acknowledged", "rejected", "paid"}),
    "acknowledged": frozenset({"paid", "rejected"}),
    "rejected": frozenset(),
    "paid": frozenset(),
}
"""created → signed → sent → acknowledged → paid, or rejected (by the lot's ARL or the
FSE's payment return); ``sent → paid`` when a payment return arrives before its ARL."""


def can_move(current: str, target: str) -> bool:
    return target in FSE_TRANSITIONS.get(current, frozenset())


# --------------------------------------------------------------------------- coverage


def _within(on: date, start: date | None, end: date | None) -> bool:
    return (start is None or start <= on) and (end is None or on <= end)


def coverage_facts(
    coverage: Coverage, on: date, rights: RightsAnswer | None = None
) -> CoverageFacts:
    """What the patient's coverage allows on ``on``; a checked ADRi answer, when there is
    one, is the authority on the AMO rights' dates (the card may be out of date)."""
    amo = coverage.amo
    amo_open = amo is not None and _within(on, None, amo.valid_until)
    if rights is not None and rights.status == "found":
        amo_open = _within(on, rights.rights_from, rights.rights_until)
    elif rights is not None:
        amo_open = False
    ald_open = any(_within(on, ald.valid_from, ald.valid_until) for ald in coverage.ald)
    amc = coverage.amc
    return CoverageFacts(
        amo_open=amo_open,
        ald_open=ald_open,
        amc_open=amc is not None and _within(on, None, amc.valid_until),
        amc_organisation=amc.organisation if amc is not None else None,
        css=coverage.css,
        regime=amo.regime if amo else (rights.regime if rights else None),
        caisse=amo.caisse if amo else (rights.caisse if rights else None),
        centre=amo.centre if amo else (rights.centre if rights else None),
    )
