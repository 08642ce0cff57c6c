"""Pure billing rules: invoices from FSE, balances, accounting entries, the FEC and CSV
exports, the monthly summary. No I/O.

Accounting (plan comptable général): a billed act debits the receivable of each payer
(account 411000 with the auxiliary account ``AMO``, ``AMC`` or ``PATIENTS``) and credits
706000 « Prestations de services »; a payment debits the bank (512000, journal ``BQ``) or
the till (530000, journal ``CA``, cash) and credits the payer's receivable. VAT is not
modelled (see docs/billing.md, limits).

FEC (fichier des écritures comptables, article A47 A-1 of the livre des procédures
fiscales): the 18 columns below in this order, a header line with their names, one line
per entry line, dates ``AAAAMMJJ``, amounts with a comma as decimal separator, fields
separated by a tab or a pipe.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from services.billing.models import (
    ActSummary,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    MonthlySummary,
    Payment,
)
from services.sesam_vitale.models import Fse

FEC_COLUMNS: tuple[str, ...] = (
    "JournalCode",
    "JournalLib",
    "EcritureNum",
    "EcritureDate",
    "CompteNum",
    "CompteLib",
    "CompAuxNum",
    "CompAuxLib",
    "PieceRef",
    "PieceDate",
    "EcritureLib",
    "Debit",
    "Credit",
    "EcritureLet",
    "DateLet",
    "ValidDate",
    "Montantdevise",
    "Idevise",
)
JOURNALS = {"VT": "Ventes", "BQ": "Banque", "CA": "Caisse"}
RECEIVABLE = ("411000", "Clients et organismes")
REVENUE = ("706000", "Prestations de services")
BANK = ("512000", "Banque")
TILL = ("530000", "Caisse")
AUXILIARY = {
    "amo": ("AMO", "Assurance Maladie obligatoire"),
    "amc": ("AMC", "Complémentaires"),
    "patient": ("PATIENTS", "Patients"),
}


def invoice_from_fse(fse_id: str, fse: Fse, number: int, now: datetime) -> Invoice:
    pricing = fse.pricing
    return Invoice(
        number=number,
        patient_id=fse.patient_id,
        issued_on=fse.act_date,
        fse_id=fse_id,
        fse_number=fse.number,
        act_key=pricing.act_key,
        bpm_step=fse.bpm_step,
        remote=fse.remote,
        lines=tuple(
            InvoiceLine(
                code=line.code,
                label=line.label,
                amount_cents=line.amount_cents,
                amo_rate=line.amo_rate,
                amo_cents=line.amo_cents,
                amc_cents=line.amc_cents,
                patient_cents=line.patient_cents,
            )
            for line in pricing.lines
        ),
        total_cents=pricing.total_cents,
        amo_cents=pricing.amo_cents,
        amc_cents=pricing.amc_cents,
        patient_cents=pricing.patient_cents,
        amc_organisation=fse.amc_organisation,
        tariff_edition=pricing.edition_id,
        test_tariff=pricing.test_tariff,
        created_at=now,
    )


@dataclass(frozen=True)
class Balance:
    paid: dict[str, int]
    outstanding: dict[str, int]
    status: InvoiceStatus

    @property
    def outstanding_total(self) -> int:
        return sum(self.outstanding.values())


def balance(invoice: Invoice, payments: Iterable[Payment], fse_state: str | None) -> Balance:
    """What each payer paid and still owes; a rejected FSE means the AMO part is not owed by
    the Assurance Maladie any more (status ``rejected``: to correct and bill again)."""
    paid = {"amo": 0, "amc": 0, "patient": 0}
    for payment in payments:
        paid[payment.payer] += payment.amount_cents
    due = {"amo": invoice.amo_cents, "amc": invoice.amc_cents, "patient": invoice.patient_cents}
    outstanding = {payer: max(0, due[payer] - paid[payer]) for payer in due}
    if fse_state == "rejected":
        return Balance(paid, outstanding, "rejected")
    return Balance(paid, outstanding, "paid" if sum(outstanding.values()) == 0 else "open")


# --------------------------------------------------------------------------- accounting


@dataclass(frozen=True)
class EntryLine:
    journal: str
    number: str
    on: date
    account: tuple[str, str]
    auxiliary: tuple[str, str] | None
    piece: str
    piece_date: date
    label: str
    debit: int
    credit: int


def _invoice_entries(invoice_id: str, invoice: Invoice) -> list[EntryLine]:
    piece = f"F{invoice.number:08d}"
    label = f"Facture {invoice.number} acte {invoice.act_key}"
    lines: list[EntryLine] = []
    for payer, amount in (
        ("amo", invoice.amo_cents),
        ("amc", invoice.amc_cents),
        ("patient", invoice.patient_cents),
    ):
        if amount:
            lines.append(
                EntryLine(
                    "VT",
                    "",
                    invoice.issued_on,
                    RECEIVABLE,
                    AUXILIARY[payer],
                    piece,
                    invoice.issued_on,
                    label,
                    amount,
                    0,
                )
            )
    lines.append(
        EntryLine(
            "VT",
            "",
            invoice.issued_on,
            REVENUE,
            None,
            piece,
            invoice.issued_on,
            label,
            0,
            invoice.total_cents,
        )
    )
    return lines


def _payment_entries(invoice: Invoice, payment: Payment) -> list[EntryLine]:
    journal, account = ("CA", TILL) if payment.method == "cash" else ("BQ", BANK)
    piece = f"F{invoice.number:08d}"
    label = f"Règlement {payment.payer.upper()} facture {invoice.number}"
    return [
        EntryLine(
            journal,
            "",
            payment.paid_on,
            account,
            None,
            piece,
            invoice.issued_on,
            label,
            payment.amount_cents,
            0,
        ),
        EntryLine(
            journal,
            "",
            payment.paid_on,
            RECEIVABLE,
            AUXILIARY[payment.payer],
            piece,
            invoice.issued_on,
            label,
            0,
            payment.amount_cents,
        ),
    ]


def accounting_entries(
    invoices: Sequence[tuple[str, Invoice]],
    payments: Sequence[Payment],
    *,
    start: date,
    end: date,
) -> list[EntryLine]:
    """Entries dated within ``[start, end]``, numbered per journal in date order (the FEC
    asks for a continuous, chronological numbering)."""
    by_id = dict(invoices)
    groups: list[list[EntryLine]] = []
    for invoice_id, invoice in invoices:
        if start <= invoice.issued_on <= end:
            groups.append(_invoice_entries(invoice_id, invoice))
    for payment in payments:
        paid_invoice = by_id.get(payment.invoice_id)
        if paid_invoice is not None and start <= payment.paid_on <= end:
            groups.append(_payment_entries(paid_invoice, payment))
    groups.sort(key=lambda g: (g[0].on, g[0].journal, g[0].piece, g[0].label))
    counters: Counter[str] = Counter()
    numbered: list[EntryLine] = []
    for group in groups:
        journal = group[0].journal
        counters[journal] += 1
        number = f"{journal}{counters[journal]:06d}"
        numbered.extend(dataclasses.replace(line, number=number) for line in group)
    return numbered


def _amount(value: int) -> str:
    return f"{value // 100},{value % 100:02d}"


def _fec_field(value: str, separator: str) -> str:
    return value.replace(separator, " ").replace("\n", " ").replace("\r", " ")


def fec_text(entries: Sequence[EntryLine], separator: str = "\t") -> str:
    """The FEC file: header, then one line per entry line (CRLF-free, UTF-8)."""
    if separator not in ("\t", "|"):
        raise ValueError("the FEC separator is a tab or a pipe")
    rows = [separator.join(FEC_COLUMNS)]
    for e in entries:
        aux_num, aux_lib = e.auxiliary if e.auxiliary else ("", "")
        fields = [
            e.journal,
            JOURNALS[e.journal],
            e.number,
            f"{e.on:%Y%m%d}",
            e.account[0],
            e.account[1],
            aux_num,
            aux_lib,
            e.piece,
            f"{e.piece_date:%Y%m%d}",
            e.label,
            _amount(e.debit),
            _amount(e.credit),
            "",
            "",
            f"{e.on:%Y%m%d}",
            "",
            "",
        ]
        rows.append(separator.join(_fec_field(f, separator) for f in fields))
    return "\n".join(rows) + "\n"


def fec_file_name(siren: str, closing: date) -> str:
    """``SIRENFECAAAAMMJJ.txt``, the name the administration expects (closing date)."""
    return f"{siren}FEC{closing:%Y%m%d}.txt"


def csv_text(entries: Sequence[EntryLine]) -> str:
    """The same entries as a spreadsheet-friendly CSV (comma, dot decimals)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["date", "journal", "entry", "account", "auxiliary", "piece", "label", "debit", "credit"]
    )
    for e in entries:
        writer.writerow(
            [
                e.on.isoformat(),
                e.journal,
                e.number,
                e.account[0],
                e.auxiliary[0] if e.auxiliary else "",
                e.piece,
                e.label,
                f"{e.debit / 100:.2f}",
                f"{e.credit / 100:.2f}",
            ]
        )
    return out.getvalue()


# --------------------------------------------------------------------------- summary


def month_bounds(month: str) -> tuple[date, date]:
    """``YYYY-MM`` to its first and last day (raises ValueError)."""
    year, mon = (int(part) for part in month.split("-"))
    start = date(year, mon, 1)
    end = date(year + (mon == 12), mon % 12 + 1, 1)
    return start, date.fromordinal(end.toordinal() - 1)


def monthly_summary(
    month: str,
    invoices: Sequence[tuple[str, Invoice, str | None]],
    payments: Sequence[Payment],
) -> MonthlySummary:
    """Acts billed in the month (by act date), money received in the month (by payment date),
    and what the month's invoices still wait for."""
    start, end = month_bounds(month)
    in_month = [(i, inv, st) for i, inv, st in invoices if start <= inv.issued_on <= end]
    ids = {i for i, _, _ in in_month}
    by_code: dict[str, list[int]] = {}
    for _, inv, _ in in_month:
        for line in inv.lines:
            by_code.setdefault(line.code, []).append(line.amount_cents)
    received = {"amo": 0, "amc": 0, "patient": 0}
    for payment in payments:
        if start <= payment.paid_on <= end:
            received[payment.payer] += payment.amount_cents
    outstanding = 0
    for invoice_id, inv, state in in_month:
        mine = [p for p in payments if p.invoice_id == invoice_id]
        bal = balance(inv, mine, state)
        if bal.status != "rejected":
            outstanding += bal.outstanding_total
    states = Counter(st or "none" for i, _, st in in_month if i in ids)
    return MonthlySummary(
        month=month,
        invoices=len(in_month),
        total_cents=sum(inv.total_cents for _, inv, _ in in_month),
        amo_cents=sum(inv.amo_cents for _, inv, _ in in_month),
        amc_cents=sum(inv.amc_cents for _, inv, _ in in_month),
        patient_cents=sum(inv.patient_cents for _, inv, _ in in_month),
        received_amo_cents=received["amo"],
        received_amc_cents=received["amc"],
        received_patient_cents=received["patient"],
        outstanding_cents=outstanding,
        rejected_fse=states.get("rejected", 0),
        by_code=[
            ActSummary(code=code, count=len(amounts), total_cents=sum(amounts))
            for code, amounts in sorted(by_code.items())
        ],
        fse_states=dict(sorted(states.items())),
    )
