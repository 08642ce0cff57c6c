"""HTTP API of billing and SESAM-Vitale: ``/api/v1/billing/...``.

Reads need ``billing:read``, changes ``billing:write``. Every access to a patient's data
(checks, invoices, FSE, lists naming patients) is audited before the answer leaves. Refusals
are problem details with a French ``detail`` for the counter.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal, NoReturn
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from appliance.audit import AuditLog
from appliance.dependencies import RequestContext
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import requires
from appliance.store import Store, Versioned
from services import sesam_vitale
from services.billing import logic
from services.billing import store as repository
from services.billing.models import (
    BillResult,
    BillStep,
    CheckRequest,
    ChecksList,
    InvoiceView,
    MonthlySummary,
    PaymentInput,
    RejectedItem,
    ReturnInput,
    ReturnResult,
    SendResult,
    SignInput,
    UnpaidItem,
)
from services.patients import PatientCrypto
from services.patients.api import CONTROLLER_OPTIONS, record
from services.sesam_vitale.models import (
    CheckRecord,
    CheckView,
    Fse,
    FseState,
    FseView,
    Lot,
    LotView,
    TariffEdition,
)

READ = "billing:read"
WRITE = "billing:write"
PURPOSE = "billing"
CLIENT_STATE_KEY = "sesam_client"
SIGNER_STATE_KEY = "fse_signer"
"""A signer set by the composition root (the CPS card adapter) wins over the key files."""


def _client(state: State, platform: Platform) -> sesam_vitale.TeleserviceClient:
    client = state.get(CLIENT_STATE_KEY)
    if not isinstance(client, sesam_vitale.TeleserviceClient):
        client = sesam_vitale.TeleserviceClient.from_settings(platform.settings)
        state[CLIENT_STATE_KEY] = client
    return client


def _signer(state: State, platform: Platform) -> sesam_vitale.FseSigner:
    configured = state.get(SIGNER_STATE_KEY)
    if configured is not None:
        return configured  # type: ignore[no-any-return]
    try:
        signer = sesam_vitale.SoftwareKeySigner.from_dir(platform.settings.key_path)
    except ValueError as exc:
        raise Problem(409, "signer-unavailable", f"Clé de signature inutilisable : {exc}") from exc
    if signer is None:
        raise Problem(
            409,
            "signer-unavailable",
            "Aucun signataire : insérez la carte CPS du pharmacien pour signer la FSE.",
        )
    return signer


def _tariff(platform: Platform) -> tuple[TariffEdition, ...]:
    try:
        return sesam_vitale.tariff(platform.settings.billing_tariff_file)
    except sesam_vitale.TariffError as exc:
        raise Problem(503, "tariff-unreadable", f"Tarification illisible : {exc}") from exc


def _check_view(item: Versioned[CheckRecord]) -> CheckView:
    r = item.entity
    return CheckView(
        id=item.entity_id,
        kind=r.kind,
        patient_id=r.patient_id,
        status=r.status,
        requested_at=r.requested_at,
        attempts=r.attempts,
        checked_at=r.checked_at,
        last_error=r.last_error,
        rights=r.rights,
        insi=r.insi,
        version=item.version,
        message=sesam_vitale.check_message(r),
    )


def _fse_view(item: Versioned[Fse]) -> FseView:
    return FseView(
        id=item.entity_id,
        version=item.version,
        recorded_at=item.recorded_at,
        recorded_by=item.recorded_by,
        fse=item.entity,
    )


def _lot_view(item: Versioned[Lot]) -> LotView:
    return LotView(
        id=item.entity_id,
        version=item.version,
        recorded_at=item.recorded_at,
        recorded_by=item.recorded_by,
        lot=item.entity,
    )


def _refuse(
    audit: AuditLog,
    ctx: RequestContext,
    action: str,
    object_type: str,
    object_id: str,
    status: int,
    slug: str,
    message: str,
    outcome: str = "refused",
) -> NoReturn:
    record(audit, ctx, action, object_type, [object_id], purpose=PURPOSE, outcome=outcome)
    raise Problem(status, slug, message)


class BillingController(Controller):
    path = "/api/v1/billing"
    tags = ["billing"]
    dependencies = CONTROLLER_OPTIONS["dependencies"]
    exception_handlers = CONTROLLER_OPTIONS["exception_handlers"]

    # ------------------------------------------------------------------ tariff

    @get("/tariff", guards=[requires(READ)], sync_to_thread=True)
    def tariff(self, platform: NamedDependency[Platform]) -> list[TariffEdition]:
        """The act codes and amounts in force, with their sources and doubts."""
        return list(_tariff(platform))

    # ------------------------------------------------------------------ checks

    @post("/checks", guards=[requires(WRITE)], status_code=200)
    async def run_check(
        self,
        data: JSONBody[CheckRequest],
        state: State,
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[PatientCrypto],
    ) -> CheckView:
        """Rights (ADRi) or identity (INSi) check now; queued and marked ``unchecked`` when
        the teleservice cannot be reached (the worker re-runs it)."""
        action = f"sesam_check_{data.kind}"
        try:
            done = await sesam_vitale.run_check(
                store, crypto, _client(state, platform), data.kind, data.patient_id, actor=ctx.actor
            )
        except sesam_vitale.PatientNotFound:
            _refuse(
                audit,
                ctx,
                action,
                "patient",
                data.patient_id,
                404,
                "not-found",
                "Patient inconnu.",
                "not_found",
            )
        except sesam_vitale.MissingNir:
            _refuse(
                audit,
                ctx,
                action,
                "patient",
                data.patient_id,
                409,
                "no-nir",
                "Le NIR du patient n'est pas renseigné : lisez sa carte Vitale.",
            )
        except sesam_vitale.TeleserviceError as exc:
            _refuse(
                audit,
                ctx,
                action,
                "patient",
                data.patient_id,
                502,
                "teleservice-error",
                f"Réponse inattendue du téléservice : {exc}",
                "failure",
            )
        record(
            audit,
            ctx,
            action,
            "patient",
            [data.patient_id],
            purpose=PURPOSE,
            outcome="success" if done.entity.status != "unchecked" else "queued",
        )
        return _check_view(done)

    @get("/patients/{patient_id:uuid}/checks", guards=[requires(READ)], sync_to_thread=True)
    def patient_checks(
        self,
        patient_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> ChecksList:
        record(audit, ctx, "sesam_checks_read", "patient", [str(patient_id)], purpose=PURPOSE)
        return ChecksList(
            checks=[_check_view(i) for i in sesam_vitale.checks_of(store, str(patient_id))]
        )

    # ------------------------------------------------------------------ acts and FSE

    @post("/acts", guards=[requires(WRITE)], status_code=201, sync_to_thread=True)
    def bill_act(
        self,
        data: JSONBody[BillStep],
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        crypto: NamedDependency[PatientCrypto],
    ) -> BillResult:
        """Bill a done BPM step: builds its FSE (state ``created``) and the invoice."""
        settings = platform.settings
        _tariff(platform)
        try:
            invoice_id, invoice, fse = repository.bill_step(
                store,
                crypto,
                data,
                actor=ctx.actor,
                tariff_file=settings.billing_tariff_file,
                pharmacy_name=settings.pharmacy_name,
                finess=settings.pharmacy_finess,
            )
        except (repository.BillingError, sesam_vitale.BillingRuleError) as exc:
            _refuse(
                audit,
                ctx,
                "bill_act",
                "patient",
                data.patient_id,
                exc.status,
                exc.slug,
                str(exc),
                "not_found" if exc.status == 404 else "refused",
            )
        record(audit, ctx, "bill_act", "patient", [data.patient_id], purpose=PURPOSE)
        return BillResult(
            invoice=repository.view(store.db, invoice_id, invoice), fse=_fse_view(fse)
        )

    @get("/fse", guards=[requires(READ)], sync_to_thread=True)
    def list_fse(
        self,
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        fse_state: Annotated[FseState | None, Parameter(query="state")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
    ) -> list[FseView]:
        items = sesam_vitale.list_fses(
            store, states=[fse_state] if fse_state else None, limit=limit, offset=offset
        )
        record(
            audit,
            ctx,
            "fse_list",
            "patient",
            sorted({i.entity.patient_id for i in items}),
            purpose=PURPOSE,
        )
        return [_fse_view(i) for i in items]

    @get("/fse/{fse_id:uuid}", guards=[requires(READ)], sync_to_thread=True)
    def get_fse(
        self,
        fse_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> FseView:
        item = sesam_vitale.get_fse(store.db, str(fse_id))
        if item is None:
            _refuse(
                audit,
                ctx,
                "fse_read",
                "fse",
                str(fse_id),
                404,
                "not-found",
                "FSE inconnue.",
                "not_found",
            )
        record(audit, ctx, "fse_read", "fse", [str(fse_id)], purpose=PURPOSE)
        return _fse_view(item)

    @get("/fse/{fse_id:uuid}/history", guards=[requires(READ)], sync_to_thread=True)
    def fse_history(
        self,
        fse_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> list[FseView]:
        items = sesam_vitale.fse_history(store, str(fse_id))
        if not items:
            _refuse(
                audit,
                ctx,
                "fse_history",
                "fse",
                str(fse_id),
                404,
                "not-found",
                "FSE inconnue.",
                "not_found",
            )
        record(audit, ctx, "fse_history", "fse", [str(fse_id)], purpose=PURPOSE)
        return [_fse_view(i) for i in items]

    @post("/fse/{fse_id:uuid}/sign", guards=[requires(WRITE)], status_code=200, sync_to_thread=True)
    def sign_fse(
        self,
        fse_id: FromPath[UUID],
        data: JSONBody[SignInput],
        state: State,
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> FseView:
        """Sign a created FSE (CPS card in production; the configured key otherwise)."""
        object_id = str(fse_id)
        if sesam_vitale.get_fse(store.db, object_id) is None:
            _refuse(
                audit,
                ctx,
                "fse_sign",
                "fse",
                object_id,
                404,
                "not-found",
                "FSE inconnue.",
                "not_found",
            )
        signer: sesam_vitale.FseSigner = (
            sesam_vitale.CpsFseSigner(platform.settings, data.pin)
            if data.pin
            else _signer(state, platform)
        )
        try:
            signed = sesam_vitale.sign_fse(store, object_id, signer, actor=ctx.actor)
        except sesam_vitale.StateError as exc:
            _refuse(audit, ctx, "fse_sign", "fse", object_id, 409, "fse-state", str(exc))
        except sesam_vitale.SignerUnavailable as exc:
            _refuse(audit, ctx, "fse_sign", "fse", object_id, 409, "signer-unavailable", str(exc))
        record(audit, ctx, "fse_sign", "fse", [object_id], purpose=PURPOSE)
        return _fse_view(signed)

    # ------------------------------------------------------------------ lots

    @post("/lots", guards=[requires(WRITE)], status_code=201, sync_to_thread=True)
    def send_lot(
        self,
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> SendResult:
        """Group every signed FSE into one lot handed to the sync outbox (stream ``fse``)."""
        made = sesam_vitale.send_signed(store, actor=ctx.actor)
        if made is None:
            return SendResult(lot=None, message="Aucune FSE signée en attente d'envoi.")
        lot, _ = made
        record(audit, ctx, "fse_lot_send", "fse_lot", [lot.entity_id], purpose=PURPOSE)
        return SendResult(
            lot=_lot_view(lot),
            message=f"Lot n° {lot.entity.number} de {len(lot.entity.fse_ids)} FSE mis en envoi.",
        )

    @get("/lots", guards=[requires(READ)], sync_to_thread=True)
    def list_lots(
        self,
        store: NamedDependency[Store],
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
    ) -> list[LotView]:
        return [_lot_view(i) for i in sesam_vitale.list_lots(store, limit, offset)]

    @get("/lots/{lot_id:uuid}/history", guards=[requires(READ)], sync_to_thread=True)
    def lot_history(self, lot_id: FromPath[UUID], store: NamedDependency[Store]) -> list[LotView]:
        items = sesam_vitale.lot_history(store, str(lot_id))
        if not items:
            raise Problem(404, "not-found", "Lot inconnu.")
        return [_lot_view(i) for i in items]

    # ------------------------------------------------------------------ returns

    @post("/returns", guards=[requires(WRITE)], status_code=200, sync_to_thread=True)
    def import_return(
        self,
        data: JSONBody[ReturnInput],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> ReturnResult:
        """Apply an acknowledgement or payment return file (once: a repeat changes nothing)."""
        try:
            result = repository.reconcile_return(store, data.text, actor=ctx.actor)
        except sesam_vitale.ReturnFormatError as exc:
            raise Problem(400, "return-format", f"Fichier de retour illisible : {exc}") from exc
        record(audit, ctx, "fse_return", "fse", [*result.paid, *result.rejected], purpose=PURPOSE)
        return result

    @get("/unpaid", guards=[requires(READ)], sync_to_thread=True)
    def unpaid(
        self,
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> list[UnpaidItem]:
        items = repository.unpaid(store)
        record(
            audit,
            ctx,
            "billing_unpaid",
            "patient",
            sorted({i.patient_id for i in items}),
            purpose=PURPOSE,
        )
        return items

    @get("/rejected", guards=[requires(READ)], sync_to_thread=True)
    def rejected(
        self,
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> list[RejectedItem]:
        items = repository.rejected(store)
        record(
            audit,
            ctx,
            "billing_rejected",
            "patient",
            sorted({i.patient_id for i in items}),
            purpose=PURPOSE,
        )
        return items

    # ------------------------------------------------------------------ invoices

    @get("/invoices/{invoice_id:uuid}", guards=[requires(READ)], sync_to_thread=True)
    def get_invoice(
        self,
        invoice_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> InvoiceView:
        invoice = repository.get_invoice(store.db, str(invoice_id))
        if invoice is None:
            _refuse(
                audit,
                ctx,
                "invoice_read",
                "invoice",
                str(invoice_id),
                404,
                "not-found",
                "Facture inconnue.",
                "not_found",
            )
        record(audit, ctx, "invoice_read", "patient", [invoice.patient_id], purpose=PURPOSE)
        return repository.view(store.db, str(invoice_id), invoice)

    @get("/invoices", guards=[requires(READ)], sync_to_thread=True)
    def list_invoices(
        self,
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        code: Annotated[str | None, Parameter(query="code", pattern=r"^[A-Z0-9]{1,8}$")] = None,
        start: Annotated[date | None, Parameter(query="start")] = None,
        end: Annotated[date | None, Parameter(query="end")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
    ) -> list[InvoiceView]:
        """Invoices per act (``code``) and period (act date), oldest first."""
        found = [
            (i, inv)
            for i, inv in repository.invoices(store)
            if (code is None or any(line.code == code for line in inv.lines))
            and (start is None or inv.issued_on >= start)
            and (end is None or inv.issued_on <= end)
        ][offset : offset + limit]
        record(
            audit,
            ctx,
            "invoice_list",
            "patient",
            sorted({inv.patient_id for _, inv in found}),
            purpose=PURPOSE,
        )
        return [repository.view(store.db, i, inv) for i, inv in found]

    @get("/patients/{patient_id:uuid}/invoices", guards=[requires(READ)], sync_to_thread=True)
    def patient_invoices(
        self,
        patient_id: FromPath[UUID],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> list[InvoiceView]:
        record(audit, ctx, "invoice_list", "patient", [str(patient_id)], purpose=PURPOSE)
        return [
            repository.view(store.db, i, inv)
            for i, inv in repository.invoices(store, patient_id=str(patient_id))
        ]

    @post(
        "/invoices/{invoice_id:uuid}/payments",
        guards=[requires(WRITE)],
        status_code=201,
        sync_to_thread=True,
    )
    def add_payment(
        self,
        invoice_id: FromPath[UUID],
        data: JSONBody[PaymentInput],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
    ) -> InvoiceView:
        """A payment by the patient or the complementary (AMO payments come from returns)."""
        try:
            result = repository.record_payment(store, str(invoice_id), data, actor=ctx.actor)
        except repository.BillingError as exc:
            _refuse(
                audit,
                ctx,
                "invoice_payment",
                "invoice",
                str(invoice_id),
                exc.status,
                exc.slug,
                str(exc),
                "not_found" if exc.status == 404 else "refused",
            )
        record(
            audit, ctx, "invoice_payment", "patient", [result.invoice.patient_id], purpose=PURPOSE
        )
        return result

    # ------------------------------------------------------------------ reports

    @get("/export/csv", guards=[requires(READ)], sync_to_thread=True, media_type="text/csv")
    def export_csv(
        self,
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        start: FromQuery[date],
        end: FromQuery[date],
    ) -> Response[str]:
        """Accounting entries of the period as CSV (comma, dot decimals)."""
        text, name = _export(platform, store, audit, ctx, start, end, "csv", "tab")
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @get("/export/fec", guards=[requires(READ)], sync_to_thread=True, media_type="text/plain")
    def export_fec(
        self,
        platform: NamedDependency[Platform],
        store: NamedDependency[Store],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        start: FromQuery[date],
        end: FromQuery[date],
        separator: Literal["tab", "pipe"] = "tab",
    ) -> Response[str]:
        """Accounting entries of the period as the FEC: 18 columns, tab or pipe separated,
        named ``<SIREN>FEC<closing date>.txt``."""
        text, name = _export(platform, store, audit, ctx, start, end, "fec", separator)
        return Response(
            text,
            media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @get("/summary", guards=[requires(READ)], sync_to_thread=True)
    def summary(
        self,
        store: NamedDependency[Store],
        month: Annotated[str, Parameter(query="month", pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")],
    ) -> MonthlySummary:
        """Acts billed, money received and outstanding for one month (``YYYY-MM``)."""
        if not 1900 <= int(month[:4]) <= 2200:
            raise Problem(400, "month", "Mois hors des années 1900 à 2200.")
        return logic.monthly_summary(
            month, repository.invoices_with_state(store), repository.all_payments(store.db)
        )


def _export(
    platform: Platform,
    store: Store,
    audit: AuditLog,
    ctx: RequestContext,
    start: date,
    end: date,
    fmt: str,
    separator: str,
) -> tuple[str, str]:
    if end < start:
        raise Problem(400, "period", "La fin de période précède son début.")
    entries = logic.accounting_entries(
        repository.invoices(store), repository.all_payments(store.db), start=start, end=end
    )
    record(audit, ctx, f"billing_export_{fmt}", "accounting", [f"{start}..{end}"], purpose=PURPOSE)
    if fmt == "csv":
        return logic.csv_text(entries), f"ecritures-{start}-{end}.csv"
    text = logic.fec_text(entries, "\t" if separator == "tab" else "|")
    siren = platform.settings.billing_siren or "000000000"
    return text, logic.fec_file_name(siren, end)
