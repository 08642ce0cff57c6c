"""Invoices, payments and the operations that bill an act or reconcile a return.

Billing a BPM step writes the FSE (SESAM-Vitale service) and the invoice in one transaction;
reconciling a return file moves the FSE states and records the Assurance Maladie's payments
in one transaction too, so the books never disagree with the FSE.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime

import sqlite_utils

from appliance.outbox import advance_inbox_cursor, inbox_cursor, read_inbox
from appliance.store import Migration, Store, Versioned, VersionedTable
from services import sesam_vitale
from services.billing.logic import Balance, balance, invoice_from_fse
from services.billing.models import (
    BillStep,
    Invoice,
    InvoiceView,
    Payment,
    PaymentInput,
    RejectedItem,
    ReturnResult,
    UnpaidItem,
)
from services.patients import PatientCrypto, bpm_cycle, load_patient
from services.sesam_vitale.models import Beneficiary, Fse

COMPONENT = "billing"
INBOX_CONSUMER = "billing-returns"
INVOICES = VersionedTable("billing_invoices", Invoice)

MIGRATIONS: tuple[Migration, ...] = (
    INVOICES.create_table_migration(COMPONENT, 1),
    Migration.sql(
        COMPONENT,
        2,
        "invoice index, payments, counters",
        """
        CREATE TABLE billing_invoice_index (
            invoice_id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE,
            patient_id TEXT NOT NULL, fse_id TEXT NOT NULL UNIQUE, issued_on TEXT NOT NULL);
        CREATE INDEX billing_invoice_patient ON billing_invoice_index (patient_id, number);
        CREATE INDEX billing_invoice_date ON billing_invoice_index (issued_on);
        CREATE TABLE billing_payments (
            payment_id TEXT PRIMARY KEY, invoice_id TEXT NOT NULL, payer TEXT NOT NULL,
            amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0), paid_on TEXT NOT NULL,
            method TEXT NOT NULL, reference TEXT, recorded_at TEXT NOT NULL,
            recorded_by TEXT NOT NULL);
        CREATE INDEX billing_payments_invoice ON billing_payments (invoice_id);
        CREATE INDEX billing_payments_date ON billing_payments (paid_on);
        CREATE UNIQUE INDEX billing_payments_noemie ON billing_payments (invoice_id, reference)
            WHERE method = 'noemie';
        CREATE TRIGGER billing_payments_no_update BEFORE UPDATE ON billing_payments
        BEGIN SELECT RAISE(ABORT, 'payments are immutable'); END;
        CREATE TRIGGER billing_payments_no_delete BEFORE DELETE ON billing_payments
        BEGIN SELECT RAISE(ABORT, 'payments are immutable'); END;
        CREATE TABLE billing_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)
        """,
    ),
)


class BillingError(Exception):
    """A request billing cannot honour; ``status``/``slug`` for the API, French message."""

    def __init__(self, status: int, slug: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.slug = slug


def _next(db: sqlite_utils.Database, name: str) -> int:
    row = db.execute("SELECT value FROM billing_counters WHERE name = ?", [name]).fetchone()
    value = (int(row[0]) if row else 0) + 1
    db.execute(
        "INSERT INTO billing_counters (name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        [name, value],
    )
    return value


def _bpm_step(
    store: Store, crypto: PatientCrypto, patient_id: str, cycle_id: str, step: str
) -> tuple[date, str] | None:
    """When and by whom the step was done in that cycle of that patient (None: not done)."""
    cycle = bpm_cycle(store, crypto, cycle_id)
    if cycle is None or cycle.patient_id != patient_id:
        return None
    done = [s for s in cycle.steps if s.kind == step]
    return (done[-1].performed_on, done[-1].pharmacist) if done else None


def bill_step(
    store: Store,
    crypto: PatientCrypto,
    body: BillStep,
    *,
    actor: str,
    tariff_file: object,
    pharmacy_name: str,
    finess: str | None,
) -> tuple[str, Invoice, Versioned[Fse]]:
    """Build the FSE of a done BPM step and its invoice (one transaction).

    Raises :class:`BillingError` (patient unknown, step not done, already billed, no NIR)
    or ``BillingRuleError`` from the pricing (no coverage, unconfirmed tariff...).
    """
    loaded = load_patient(store, crypto, body.patient_id)
    if loaded is None:
        raise BillingError(404, "not-found", f"Patient inconnu : {body.patient_id}")
    patient = loaded[0]
    done = _bpm_step(store, crypto, body.patient_id, body.bpm_cycle_id, body.step)
    if done is None:
        raise BillingError(
            409,
            "step-not-done",
            f"L'étape « {body.step} » n'est pas réalisée dans ce bilan partagé de médication : "
            "elle ne peut pas être facturée.",
        )
    act_date, pharmacist = done
    nir = patient.identity.nir
    if not nir:
        raise BillingError(
            409,
            "no-nir",
            "Le NIR du patient n'est pas renseigné : lisez sa carte Vitale avant de facturer.",
        )
    editions = sesam_vitale.tariff(tariff_file)  # type: ignore[arg-type]
    rights = sesam_vitale.latest_rights(store, body.patient_id)
    facts = sesam_vitale.coverage_facts(patient.coverage, act_date, rights)
    pricing = sesam_vitale.price_step(
        editions,
        body.step,
        act_date=act_date,
        remote=body.remote,
        coverage=facts,
        exoneration=body.exoneration,
    )
    now = datetime.now(UTC)
    with store.write() as db:
        already = sesam_vitale.billed_step(db, body.bpm_cycle_id, body.step)
        if already is not None:
            raise BillingError(
                409,
                "already-billed",
                f"Cette étape est déjà facturée (FSE {already}) : "
                "une étape ne se facture qu'une fois.",
            )
        fse = Fse(
            number=sesam_vitale.next_fse_number(db),
            patient_id=body.patient_id,
            beneficiary=Beneficiary(
                nir=nir,
                birth_date=patient.identity.birth_date,
                regime=facts.regime,
                caisse=facts.caisse,
                centre=facts.centre,
            ),
            act_date=act_date,
            bpm_cycle_id=body.bpm_cycle_id,
            bpm_step=body.step,
            remote=body.remote,
            pricing=pricing,
            pharmacy_name=pharmacy_name,
            pharmacy_am_number=finess or "",
            executant=pharmacist,
            prescriber_rpps=body.prescriber_rpps,
            amc_organisation=facts.amc_organisation if pricing.amc_cents else None,
            created_at=now,
        )
        stored = sesam_vitale.create_fse(db, fse, actor=actor)
        invoice_id = str(uuid.uuid4())
        invoice = invoice_from_fse(stored.entity_id, fse, _next(db, "invoice"), now)
        INVOICES.append(db, invoice_id, invoice, actor=actor, expected_version=0)
        db.execute(
            "INSERT INTO billing_invoice_index (invoice_id, number, patient_id, fse_id, issued_on) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                invoice_id,
                invoice.number,
                invoice.patient_id,
                stored.entity_id,
                act_date.isoformat(),
            ],
        )
    return invoice_id, invoice, stored


# --------------------------------------------------------------------------- reading


def _payment(row: dict[str, object]) -> Payment:
    return Payment(
        id=str(row["payment_id"]),
        invoice_id=str(row["invoice_id"]),
        payer=row["payer"],  # type: ignore[arg-type]
        amount_cents=int(row["amount_cents"]),  # type: ignore[call-overload]
        paid_on=date.fromisoformat(str(row["paid_on"])),
        method=row["method"],  # type: ignore[arg-type]
        reference=str(row["reference"]) if row["reference"] is not None else None,
        recorded_at=datetime.fromisoformat(str(row["recorded_at"])),
        recorded_by=str(row["recorded_by"]),
    )


def payments_of(db: sqlite_utils.Database, invoice_id: str) -> list[Payment]:
    return [
        _payment(row)
        for row in db.query(
            "SELECT * FROM billing_payments WHERE invoice_id = ? ORDER BY recorded_at",
            [invoice_id],
        )
    ]


def all_payments(db: sqlite_utils.Database) -> list[Payment]:
    return [_payment(row) for row in db.query("SELECT * FROM billing_payments ORDER BY paid_on")]


def get_invoice(db: sqlite_utils.Database, invoice_id: str) -> Invoice | None:
    item = INVOICES.get(db, invoice_id)
    return item.entity if item else None


def _fse_state(db: sqlite_utils.Database, fse_id: str) -> str | None:
    row = db.execute("SELECT state FROM sesam_fse_index WHERE fse_id = ?", [fse_id]).fetchone()
    return str(row[0]) if row else None


def view(db: sqlite_utils.Database, invoice_id: str, invoice: Invoice) -> InvoiceView:
    payments = payments_of(db, invoice_id)
    state = _fse_state(db, invoice.fse_id)
    bal: Balance = balance(invoice, payments, state)
    return InvoiceView(
        id=invoice_id,
        invoice=invoice,
        fse_state=state,  # type: ignore[arg-type]
        payments=payments,
        paid_amo_cents=bal.paid["amo"],
        paid_amc_cents=bal.paid["amc"],
        paid_patient_cents=bal.paid["patient"],
        outstanding_cents=bal.outstanding_total,
        status=bal.status,
    )


def invoices(
    store: Store, *, patient_id: str | None = None, limit: int = 10_000, offset: int = 0
) -> list[tuple[str, Invoice]]:
    rows = store.db.execute(
        "SELECT invoice_id FROM billing_invoice_index WHERE (? IS NULL OR patient_id = ?) "
        "ORDER BY number LIMIT ? OFFSET ?",
        [patient_id, patient_id, limit, offset],
    ).fetchall()
    found = []
    for row in rows:
        invoice = get_invoice(store.db, str(row[0]))
        if invoice is not None:
            found.append((str(row[0]), invoice))
    return found


def invoices_with_state(store: Store) -> list[tuple[str, Invoice, str | None]]:
    return [(i, inv, _fse_state(store.db, inv.fse_id)) for i, inv in invoices(store)]


def unpaid(store: Store) -> list[UnpaidItem]:
    items = []
    for invoice_id, invoice in invoices(store):
        v = view(store.db, invoice_id, invoice)
        if v.status == "paid":
            continue
        due = balance(invoice, v.payments, v.fse_state)
        items.append(
            UnpaidItem(
                invoice_id=invoice_id,
                invoice_number=invoice.number,
                patient_id=invoice.patient_id,
                issued_on=invoice.issued_on,
                fse_state=v.fse_state,
                outstanding_amo_cents=due.outstanding["amo"],
                outstanding_amc_cents=due.outstanding["amc"],
                outstanding_patient_cents=due.outstanding["patient"],
            )
        )
    return items


def rejected(store: Store) -> list[RejectedItem]:
    items = []
    for item in sesam_vitale.list_fses(store, states=["rejected"], limit=10_000):
        row = store.db.execute(
            "SELECT invoice_id FROM billing_invoice_index WHERE fse_id = ?", [item.entity_id]
        ).fetchone()
        fse = item.entity
        items.append(
            RejectedItem(
                fse_id=item.entity_id,
                fse_number=fse.number,
                patient_id=fse.patient_id,
                act_date=fse.act_date,
                code=fse.rejection_code,
                label=fse.rejection_label,
                invoice_id=str(row[0]) if row else None,
            )
        )
    return items


# --------------------------------------------------------------------------- payments


def _insert_payment(db: sqlite_utils.Database, payment: Payment) -> None:
    db.execute(
        "INSERT INTO billing_payments (payment_id, invoice_id, payer, amount_cents, paid_on, "
        "method, reference, recorded_at, recorded_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            payment.id,
            payment.invoice_id,
            payment.payer,
            payment.amount_cents,
            payment.paid_on.isoformat(),
            payment.method,
            payment.reference,
            payment.recorded_at.isoformat(),
            payment.recorded_by,
        ],
    )


def record_payment(store: Store, invoice_id: str, body: PaymentInput, *, actor: str) -> InvoiceView:
    """A payment by the patient or the complementary; refused above what that payer owes."""
    with store.write() as db:
        invoice = get_invoice(db, invoice_id)
        if invoice is None:
            raise BillingError(404, "not-found", f"Facture inconnue : {invoice_id}")
        due = balance(invoice, payments_of(db, invoice_id), _fse_state(db, invoice.fse_id))
        owed = due.outstanding[body.payer]
        if body.amount_cents > owed:
            raise BillingError(
                409,
                "overpayment",
                f"Le montant dépasse ce qui reste dû par ce payeur ({owed / 100:.2f} €).",
            )
        _insert_payment(
            db,
            Payment(
                id=str(uuid.uuid4()),
                invoice_id=invoice_id,
                payer=body.payer,
                amount_cents=body.amount_cents,
                paid_on=body.paid_on,
                method=body.method,
                reference=body.reference,
                recorded_at=datetime.now(UTC),
                recorded_by=actor,
            ),
        )
        return view(db, invoice_id, invoice)


def _record_amo_payments(
    db: sqlite_utils.Database, outcome: sesam_vitale.ReturnOutcome, actor: str
) -> ReturnResult:
    """Record, against each invoice, the AMO payment of every FSE the return marked paid."""
    recorded = 0
    for fse_id in outcome.paid:
        item = sesam_vitale.get_fse(db, fse_id)
        row = db.execute(
            "SELECT invoice_id FROM billing_invoice_index WHERE fse_id = ?", [fse_id]
        ).fetchone()
        if item is None or row is None or item.entity.paid_on is None:
            continue
        _insert_payment(
            db,
            Payment(
                id=str(uuid.uuid4()),
                invoice_id=str(row[0]),
                payer="amo",
                amount_cents=item.entity.paid_cents or 0,
                paid_on=item.entity.paid_on,
                method="noemie",
                reference=f"{outcome.sha256[:24]}:{item.entity.number}",
                recorded_at=datetime.now(UTC),
                recorded_by=actor,
            ),
        )
        recorded += 1
    return ReturnResult(
        sha256=outcome.sha256,
        duplicate=outcome.duplicate,
        acknowledged_lots=outcome.acknowledged_lots,
        rejected_lots=outcome.rejected_lots,
        paid=outcome.paid,
        rejected=outcome.rejected,
        ignored=outcome.ignored,
        payments_recorded=recorded,
    )


def reconcile_return(store: Store, text: str, *, actor: str) -> ReturnResult:
    """Apply a return file (FSE states) and record the AMO payments it announces, once.

    Raises ``ReturnFormatError`` for a malformed file (nothing stored)."""
    with store.write() as db:
        _, outcome = sesam_vitale.apply_return(db, text, actor=actor)
        return _record_amo_payments(db, outcome, actor)


def process_inbox(store: Store, *, actor: str, limit: int = 100) -> list[ReturnResult]:
    """What the sync agent brought back on stream ``teletransmission``, each item once:

    * ``fse.ack`` (a lot's ARL) and ``fse.payment`` (a lot's payment) from the relay;
    * ``return``: a NOEMIE-style file, payload ``{"text": FILE}``.

    An item that cannot be applied (malformed file, payment not matching the lot) is noted
    in the result's ``ignored`` and the cursor moves on; the item stays in the inbox."""
    results: list[ReturnResult] = []
    after = inbox_cursor(store.db, INBOX_CONSUMER)
    items = read_inbox(store.db, stream="teletransmission", after=after, limit=limit)
    for item in items:
        with store.write() as db:
            text = item.payload.get("text")
            if item.kind == "return" and isinstance(text, str):
                try:
                    _, outcome = sesam_vitale.apply_return(db, text, actor=actor)
                except sesam_vitale.ReturnFormatError as exc:
                    outcome = sesam_vitale.ReturnOutcome(
                        sha256=f"inbox:{item.remote_id}", duplicate=False, ignored=[str(exc)]
                    )
                results.append(_record_amo_payments(db, outcome, actor))
            else:
                translated = sesam_vitale.gateway_return(db, item.kind, item.payload)
                if translated is not None:
                    parsed, notes = translated
                    outcome = sesam_vitale.apply_records(
                        db,
                        parsed,
                        key=f"inbox:{item.remote_id}",
                        text=json.dumps(item.payload, sort_keys=True),
                        actor=actor,
                    )
                    outcome.ignored.extend(notes)
                    results.append(_record_amo_payments(db, outcome, actor))
            advance_inbox_cursor(db, INBOX_CONSUMER, item.id)
    return results


def payments_between(store: Store, start: date, end: date) -> list[Payment]:
    return [p for p in all_payments(store.db) if start <= p.paid_on <= end]
