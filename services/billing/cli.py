"""``hygie billing ...``: the same operations as ``/api/v1/billing``, for the counter's
terminal and scripts; audited as ``system:cli``. Errors: one French line, non-zero exit."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

import click
import msgspec

from appliance.commands import (
    CLI_ACTOR,
    EXIT_FAILURE,
    EXIT_USAGE,
    audit_cli,
    fail,
    platform_session,
)
from appliance.keys import SecretError
from appliance.platform import Platform

ACTOR = CLI_ACTOR


def _audit(platform: Platform, action: str, object_type: str, object_id: str, outcome: str) -> None:
    audit_cli(platform, action, object_type, object_id, outcome, purpose="billing")


def _echo(value: object) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value)).decode())


@click.group("billing")
def billing() -> None:
    """Billing: bill a BPM step, returns, payments, unpaid and rejected items, exports."""


@billing.command("bill")
@click.argument("patient_id")
@click.argument("cycle_id")
@click.argument("step")
@click.option("--remote", is_flag=True, help="Entretien done remotely.")
@click.option("--ald", is_flag=True, help="Act related to the patient's ALD (exoneration).")
@click.option("--prescriber", default=None, help="RPPS of the prescribing physician.")
def bill_command(
    patient_id: str, cycle_id: str, step: str, remote: bool, ald: bool, prescriber: str | None
) -> None:
    """Bill STEP (adhesion, recueil, ...) of the BPM cycle CYCLE_ID of PATIENT_ID."""
    from services import sesam_vitale
    from services.billing.models import BillStep
    from services.billing.store import BillingError, bill_step
    from services.patients import patient_crypto

    try:
        body = msgspec.convert(
            {
                "patient_id": patient_id,
                "bpm_cycle_id": cycle_id,
                "step": step,
                "remote": remote,
                "exoneration": "ald" if ald else "none",
                "prescriber_rpps": prescriber,
            },
            BillStep,
        )
    except msgspec.ValidationError as exc:
        fail(f"demande invalide : {exc}", EXIT_USAGE)
    with platform_session() as platform:
        try:
            crypto = patient_crypto(platform.settings)
        except SecretError as exc:
            fail(str(exc), EXIT_FAILURE)
        settings = platform.settings
        try:
            invoice_id, invoice, fse = bill_step(
                platform.store,
                crypto,
                body,
                actor=ACTOR,
                tariff_file=settings.billing_tariff_file,
                pharmacy_name=settings.pharmacy_name,
                finess=settings.pharmacy_finess,
            )
        except (BillingError, sesam_vitale.BillingRuleError, sesam_vitale.TariffError) as exc:
            _audit(platform, "bill_act", "patient", patient_id[:64], "refused")
            fail(str(exc), EXIT_FAILURE)
        _audit(platform, "bill_act", "patient", patient_id, "success")
        _echo({"invoice_id": invoice_id, "fse_id": fse.entity_id, "invoice": invoice})


@billing.group("returns")
def returns() -> None:
    """Acknowledgement and payment return files."""


@returns.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def import_return(file: Path) -> None:
    """Apply a NOEMIE-style return FILE (acknowledgements, payments, rejections)."""
    from services import sesam_vitale
    from services.billing.store import reconcile_return

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{file} : illisible ({exc})", EXIT_USAGE)
    with platform_session() as platform:
        try:
            result = reconcile_return(platform.store, text, actor=ACTOR)
        except sesam_vitale.ReturnFormatError as exc:
            fail(f"{file} : fichier de retour invalide ({exc})", EXIT_USAGE)
        for fse_id in [*result.paid, *result.rejected]:
            _audit(platform, "fse_return", "fse", fse_id, "success")
        _echo(result)


@billing.command("transmit")
@click.argument("lot_id")
def transmit_command(lot_id: str) -> None:
    """Send a lot straight to the teletransmission URL (the LOCAL SIMULATOR in demos) and
    apply its acknowledgement and payment return."""
    from services import sesam_vitale
    from services.billing.store import reconcile_return

    with platform_session() as platform:
        lot = sesam_vitale.get_lot(platform.store.db, lot_id)
        if lot is None:
            fail(f"lot inconnu : {lot_id}", EXIT_USAGE)
        fses = [f for i in lot.entity.fse_ids if (f := sesam_vitale.get_fse(platform.store.db, i))]
        payload = sesam_vitale.lot_payload(lot_id, lot.entity, fses)
        client = sesam_vitale.TeleserviceClient.from_settings(platform.settings)

        async def exchange() -> list[str]:
            ack = await client.transmit(payload)
            texts = [ack]
            if "|ACCEPTE|" in ack:
                texts.append(await client.fetch_return(lot_id))
            return texts

        try:
            texts = asyncio.run(exchange())
        except (sesam_vitale.TeleserviceUnavailable, sesam_vitale.TeleserviceError) as exc:
            fail(f"télétransmission impossible : {exc}", EXIT_FAILURE)
        results = []
        for text in texts:
            try:
                results.append(reconcile_return(platform.store, text, actor=ACTOR))
            except sesam_vitale.ReturnFormatError as exc:
                fail(f"retour invalide : {exc}", EXIT_FAILURE)
        _audit(platform, "fse_lot_transmit", "fse_lot", lot_id, "success")
        _echo(results)


@billing.command("unpaid")
def unpaid_command() -> None:
    """Invoices still waiting for money (AMO, AMC or patient)."""
    from services.billing.store import unpaid

    with platform_session() as platform:
        items = unpaid(platform.store)
        for patient_id in sorted({i.patient_id for i in items}):
            _audit(platform, "billing_unpaid", "patient", patient_id, "success")
        _echo(items)


@billing.command("rejected")
def rejected_command() -> None:
    """FSE the Assurance Maladie rejected, with the reason."""
    from services.billing.store import rejected

    with platform_session() as platform:
        items = rejected(platform.store)
        for patient_id in sorted({i.patient_id for i in items}):
            _audit(platform, "billing_rejected", "patient", patient_id, "success")
        _echo(items)


@billing.command("export")
@click.option("--start", required=True, type=click.DateTime(["%Y-%m-%d"]))
@click.option("--end", required=True, type=click.DateTime(["%Y-%m-%d"]))
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "fec"]), default="csv", show_default=True
)
@click.option(
    "--separator",
    type=click.Choice(["tab", "pipe"]),
    default="tab",
    show_default=True,
    help="FEC field separator.",
)
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None)
def export_command(
    start: object, end: object, fmt: str, separator: str, output: Path | None
) -> None:
    """Accounting entries of a period as CSV or FEC."""
    from services.billing import logic
    from services.billing.store import all_payments, invoices

    first = start.date()  # type: ignore[attr-defined]
    last = end.date()  # type: ignore[attr-defined]
    if last < first:
        fail("la fin de période précède son début", EXIT_USAGE)
    with platform_session() as platform:
        entries = logic.accounting_entries(
            invoices(platform.store), all_payments(platform.store.db), start=first, end=last
        )
        if fmt == "csv":
            text = logic.csv_text(entries)
        else:
            text = logic.fec_text(entries, "\t" if separator == "tab" else "|")
        _audit(platform, "billing_export", "accounting", f"{first}..{last}", "success")
        if output:
            output.write_text(text, encoding="utf-8")
        else:
            click.echo(text, nl=False)


@billing.command("summary")
@click.argument("month")
def summary_command(month: str) -> None:
    """Monthly summary for MONTH (YYYY-MM)."""
    from services.billing import logic
    from services.billing.store import all_payments, invoices_with_state

    try:
        logic.month_bounds(month)
    except ValueError:
        fail(f"mois invalide : {month!r} (attendu AAAA-MM)", EXIT_USAGE)
    with platform_session() as platform:
        _echo(
            logic.monthly_summary(
                month, invoices_with_state(platform.store), all_payments(platform.store.db)
            )
        )


@billing.command("pay")
@click.argument("invoice_id")
@click.option("--payer", type=click.Choice(["patient", "amc"]), required=True)
@click.option("--amount-cents", type=click.IntRange(1, 100_000_000), required=True)
@click.option("--method", type=click.Choice(["cash", "card", "cheque", "transfer"]), required=True)
@click.option("--paid-on", type=click.DateTime(["%Y-%m-%d"]), default=None)
def pay_command(
    invoice_id: str, payer: str, amount_cents: int, method: str, paid_on: object
) -> None:
    """Record a payment by the patient or the complementary."""
    from services.billing.models import PaymentInput
    from services.billing.store import BillingError, record_payment

    when = paid_on.date() if paid_on is not None else date.today()  # type: ignore[attr-defined]
    body = PaymentInput(payer=payer, amount_cents=amount_cents, paid_on=when, method=method)  # type: ignore[arg-type]
    with platform_session() as platform:
        try:
            view = record_payment(platform.store, invoice_id, body, actor=ACTOR)
        except BillingError as exc:
            fail(str(exc), EXIT_USAGE if exc.status == 404 else EXIT_FAILURE)
        _audit(platform, "invoice_payment", "patient", view.invoice.patient_id, "success")
        click.echo(
            json.dumps(
                {
                    "invoice_id": invoice_id,
                    "status": view.status,
                    "outstanding_cents": view.outstanding_cents,
                }
            )
        )


@billing.command("invoices")
@click.option("--patient", "patient_id", default=None, help="Only this patient's invoices.")
@click.option("--code", default=None, help="Only invoices with this act code.")
def invoices_command(patient_id: str | None, code: str | None) -> None:
    """Invoices with their payments and what is still owed (JSON)."""
    from services.billing.store import invoices, view

    with platform_session() as platform:
        found = [
            view(platform.store.db, i, inv)
            for i, inv in invoices(platform.store, patient_id=patient_id)
            if code is None or any(line.code == code for line in inv.lines)
        ]
        for pid in sorted({v.invoice.patient_id for v in found}):
            _audit(platform, "invoice_list", "patient", pid, "success")
        _echo(found)
