"""HTTP API of the card readers: list them, read the card in one, poll card events.

Reading a Vitale card is access to patient data: each beneficiary read is audited (the
matching patient record's id, never a name or a NIR). Card failures are 409 problems whose
``detail`` is the French message for the counter and ``card_error`` the stable code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import Parameter

from appliance.audit import AuditLog
from appliance.dependencies import RequestContext
from appliance.keys import SecretError
from appliance.platform import Platform
from appliance.problems import Problem
from appliance.security import requires
from appliance.store import Store
from drivers.cps_vitale import CardError, CardTimeout, CpsCard, VitaleCard, list_readers
from drivers.cps_vitale.errors import NoCard, UnknownCard
from services.cards import logic
from services.cards.models import (
    BeneficiaryView,
    CardEventsView,
    CardEventView,
    CpsView,
    HolderView,
    PatientFromCardRequest,
    PatientFromCardView,
    ReadersView,
    ReaderView,
    ReadRequest,
    VitaleView,
)
from services.identity.cards import DEVICE_COOKIE, device_hash, register_card_authenticator
from services.patients import PatientCrypto, patient_crypto

CRYPTO_STATE_KEY = "cards_patients_crypto"


def card_problem(error: CardError) -> Problem:
    return Problem(409, f"card-{error.code}", error.message, extra={"card_error": error.code})


def _reader(request: Request[Any, Any, Any], platform: Platform, asked: str | None) -> str | None:
    """The reader asked for, else that of the calling terminal's workstation, else the
    default (``cards_reader`` or the first reader holding a card)."""
    if asked is not None:
        return asked
    terminal = device_hash(request.cookies.get(DEVICE_COOKIE))
    return logic.terminal_reader(platform.settings, platform.store, terminal)


def _crypto(state: State, platform: Platform) -> PatientCrypto | None:
    cached = state.get(CRYPTO_STATE_KEY)
    if isinstance(cached, PatientCrypto):
        return cached
    try:
        crypto = patient_crypto(platform.settings)
    except SecretError:
        return None
    state[CRYPTO_STATE_KEY] = crypto
    return crypto


def _vitale_view(
    card: VitaleCard, platform: Platform, state: State, audit: AuditLog, ctx: RequestContext
) -> VitaleView:
    patient_ids = logic.match_and_audit(
        platform.store,
        audit,
        _crypto(state, platform),
        card,
        lambda object_id, outcome: ctx.audit_event(
            "vitale.read", "patient", object_id, purpose="care", outcome=outcome
        ),
    )
    return VitaleView(
        reader=card.reader,
        atr=card.atr,
        protocol=card.protocol,
        beneficiaries=[
            BeneficiaryView(
                **beneficiary.as_json(),
                patient_id=patient_id,
                form=logic.patient_form(beneficiary),
            )
            for beneficiary, patient_id in zip(card.beneficiaries, patient_ids, strict=True)
        ],
        apdus=card.apdus,
        ms=card.ms,
    )


def _cps_view(card: CpsCard) -> CpsView:
    return CpsView(
        reader=card.reader,
        atr=card.atr,
        protocol=card.protocol,
        holder=HolderView(**card.holder.as_json()),  # type: ignore[arg-type]
        certificate_sha256=card.certificate_sha256,
        not_after=card.not_after,
        pin_tries_left=card.pin_tries_left,
        apdus=card.apdus,
        ms=card.ms,
    )


class CardsController(Controller):
    path = "/api/v1/cards"
    tags = ["cards"]

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        # The login page offers the CPS card when this app's settings ask for it; an app
        # built without it removes a registration left by another one (tests build many).
        settings = owner.state.get("settings") if hasattr(owner, "state") else None
        if settings is not None:
            state = owner.state

            def store() -> Store | None:
                platform = state.get("platform")
                return platform.store if isinstance(platform, Platform) else None

            enabled = settings.cards_cps_login
            register_card_authenticator(
                logic.CpsPinAuthenticator(settings, store=store) if enabled else None
            )

    @get("/readers", guards=[requires("cards:read")], sync_to_thread=True)
    def readers(self, platform: NamedDependency[Platform]) -> ReadersView:
        """Every reader pcscd knows, and whether a card is in it."""
        try:
            found = list_readers(logic.card_config(platform.settings))
        except CardError as exc:
            raise card_problem(exc) from exc
        return ReadersView(
            readers=[
                ReaderView(
                    name=r.name, card_present=r.present, mute=r.mute, atr=r.atr.hex().upper()
                )
                for r in found
            ]
        )

    @post("/read", guards=[requires("cards:read")], sync_to_thread=True, status_code=200)
    def read(
        self,
        data: ReadRequest,
        platform: NamedDependency[Platform],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        state: State,
        request: Request[Any, Any, Any],
    ) -> VitaleView | CpsView:
        """Read the card now in the reader: a Vitale's beneficiaries (audited, with the
        matching patient record and a pre-filled form) or a CPS's public identity. Without
        ``reader``, the reader of the calling terminal's workstation, else the default."""
        reader = _reader(request, platform, data.reader)
        try:
            card = logic.read(platform.settings, reader, timeout_s=0)
        except CardTimeout as exc:
            raise card_problem(NoCard(detail=exc.detail)) from exc
        except CardError as exc:
            raise card_problem(exc) from exc
        if isinstance(card, VitaleCard):
            return _vitale_view(card, platform, state, audit, ctx)
        with audit.store.write():
            audit.record(
                ctx.audit_event("cps.read", "cps_card", card.holder.national_id, purpose="care")
            )
        return _cps_view(card)

    @get("/events", guards=[requires("cards:read")], sync_to_thread=False)
    def events(
        self,
        platform: NamedDependency[Platform],
        after: Annotated[int, Parameter(ge=0, le=2**53, required=False)] = 0,
    ) -> CardEventsView:
        """Card events since ``after`` (poll every 300-500 ms; starts the reader monitor)."""
        monitor = logic.EVENTS.ensure_monitor(platform.settings)
        found, last = logic.EVENTS.since(after)
        error = monitor.last_error
        return CardEventsView(
            events=[
                CardEventView(
                    seq=seq, kind=e.kind, reader=e.reader, atr=e.atr, at=e.at, message=e.message
                )
                for seq, e in found
            ],
            last_seq=last,
            monitor_running=monitor.running.is_set(),
            monitor_error=error.message if error is not None else None,
        )

    @post(
        "/patients",
        guards=[requires("cards:read", "patients:write")],
        sync_to_thread=True,
        status_code=200,
    )
    def patient_from_card(
        self,
        data: PatientFromCardRequest,
        platform: NamedDependency[Platform],
        audit: NamedDependency[AuditLog],
        ctx: NamedDependency[RequestContext],
        state: State,
        request: Request[Any, Any, Any],
    ) -> PatientFromCardView:
        """Read the Vitale card now in the reader and find the patient record of one of its
        beneficiaries by NIR, or create a provisional one from the card (audited). The reader
        is chosen as for ``POST /read``."""
        reader = _reader(request, platform, data.reader)
        try:
            card = logic.read(platform.settings, reader, timeout_s=0)
        except CardTimeout as exc:
            raise card_problem(NoCard(detail=exc.detail)) from exc
        except CardError as exc:
            raise card_problem(exc) from exc
        if not isinstance(card, VitaleCard):
            raise card_problem(UnknownCard("Cette carte n'est pas une carte Vitale."))
        if data.beneficiary >= len(card.beneficiaries):
            raise Problem(
                409,
                "card-no-such-beneficiary",
                f"La carte ne porte que {len(card.beneficiaries)} bénéficiaire(s).",
                extra={"card_error": "no_such_beneficiary"},
            )
        crypto = _crypto(state, platform)
        if crypto is None:
            raise Problem(503, "field-key-unavailable", "the patient field key is missing")
        _vitale_view(card, platform, state, audit, ctx)  # the read itself, audited
        beneficiary = card.beneficiaries[data.beneficiary]
        zone = ZoneInfo(platform.settings.timezone)
        try:
            patient_id, created = logic.find_or_create_patient(
                platform.store,
                crypto,
                beneficiary,
                actor=ctx.actor,
                today=datetime.now(zone).date(),
            )
        except logic.CardPatientError as exc:
            raise Problem(
                409,
                "card-patient-rejected",
                exc.message,
                extra={"card_error": "patient_rejected", "fields": exc.errors},
            ) from exc
        if created:
            with audit.store.write():
                audit.record(ctx.audit_event("create", "patient", patient_id, purpose="care"))
        return PatientFromCardView(patient_id=patient_id, created=created)
