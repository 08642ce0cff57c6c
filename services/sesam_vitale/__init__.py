"""SESAM-Vitale: rights (ADRi) and identity (INSi) checks, FSE for pharmacist acts, their
signature, lots for teletransmission through the sync outbox, and NOEMIE-style returns.

The real teleservices need certified components and the health network; this package holds
the client boundary and a LOCAL SIMULATOR (``hygie sesam simulate``) for tests and demos.
Billing (``services/billing``) drives it: it bills BPM steps and reconciles payments.
See docs/sesam_vitale.md.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from appliance.plugin import ServicePlugin
from appliance.store import Store, Versioned
from services.patients import PatientCrypto, load_patient
from services.sesam_vitale import store as _repository
from services.sesam_vitale.client import (
    TeleserviceClient,
    TeleserviceError,
    TeleserviceUnavailable,
)
from services.sesam_vitale.logic import (
    BillingRuleError,
    ReturnFormatError,
    TariffError,
    coverage_facts,
    fse_signed_bytes,
    load_tariff,
    price_step,
)
from services.sesam_vitale.models import CheckKind, CheckRecord, Fse, Lot, TariffEdition
from services.sesam_vitale.signing import (
    CpsFseSigner,
    FseSigner,
    SignerUnavailable,
    SoftwareKeySigner,
    verify_signature,
)
from services.sesam_vitale.store import (
    MIGRATIONS,
    ReturnOutcome,
    StateError,
    apply_records,
    apply_return,
    billed_step,
    create_fse,
    fse_history,
    gateway_return,
    get_fse,
    get_lot,
    latest_rights,
    list_fses,
    list_lots,
    lot_history,
    lot_payload,
    next_fse_number,
)

if TYPE_CHECKING:
    from huey import Huey

    from appliance.platform import Platform

ACTOR_WORKER = "system:worker"


@functools.lru_cache(maxsize=8)
def _tariff_cached(site_file: Path | None, mtime: float) -> tuple[TariffEdition, ...]:
    return load_tariff(site_file)


def tariff(site_file: Path | None) -> tuple[TariffEdition, ...]:
    """The tariff editions in force for this site (reloaded when the site file changes)."""
    mtime = site_file.stat().st_mtime if site_file is not None and site_file.exists() else 0.0
    return _tariff_cached(site_file, mtime)


def check_message(record: CheckRecord) -> str:
    """The counter's sentence for a check, in French."""
    what = "Droits (ADRi)" if record.kind == "rights" else "Identité INS (INSi)"
    if record.status == "checked":
        return f"{what} : vérifié."
    if record.status == "not_found":
        return f"{what} : inconnu du téléservice."
    return (
        f"{what} : téléservice injoignable, vérification mise en file d'attente "
        "(dossier marqué « non vérifié », nouvel essai automatique)."
    )


def _traits(patient: Any) -> dict[str, Any]:
    identity = patient.identity
    if identity.nir:
        return {"nir": identity.nir}
    return {
        "birth_family_name": identity.birth_family_name,
        "given_names": identity.given_names,
        "birth_date": identity.birth_date.isoformat(),
        "sex": identity.sex,
    }


class PatientNotFound(Exception):
    pass


class MissingNir(Exception):
    """A rights check needs the patient's NIR."""


async def run_check(
    store: Store,
    crypto: PatientCrypto,
    client: TeleserviceClient,
    kind: CheckKind,
    patient_id: str,
    *,
    actor: str,
    check_id: str | None = None,
) -> Versioned[CheckRecord]:
    """Ask the teleservice now; when it cannot be reached the check is stored ``unchecked``
    (queued: the worker re-runs it) instead of failing the counter's work.

    ``check_id`` re-runs a queued check (a new version of it). Raises
    :class:`PatientNotFound`, :class:`MissingNir` or ``TeleserviceError`` (a 4xx answer).
    """
    loaded = load_patient(store, crypto, patient_id)
    if loaded is None:
        raise PatientNotFound(patient_id)
    patient = loaded[0]
    if kind == "rights" and not patient.identity.nir:
        raise MissingNir(patient_id)
    previous = _repository.get_check(store, check_id) if check_id else None
    now = datetime.now(UTC)
    base = CheckRecord(
        kind=kind,
        patient_id=patient_id,
        status="unchecked",
        requested_at=previous.entity.requested_at if previous else now,
        attempts=(previous.entity.attempts + 1) if previous else 1,
    )
    try:
        if kind == "rights":
            rights = await client.rights(patient.identity.nir or "", patient.identity.birth_date)
            record = _replace(
                base,
                status="checked" if rights.status == "found" else "not_found",
                checked_at=now,
                rights=rights,
            )
        else:
            insi = await client.identity(_traits(patient))
            record = _replace(
                base,
                status="checked" if insi.status == "found" else "not_found",
                checked_at=now,
                insi=insi,
            )
    except TeleserviceUnavailable as exc:
        record = _replace(base, last_error=str(exc)[:300])
    with store.write() as db:
        return _repository.save_check(
            db,
            record,
            actor=actor,
            check_id=check_id,
            expected_version=previous.version if previous else 0,
        )


def _replace(record: CheckRecord, **changes: Any) -> CheckRecord:
    return msgspec.structs.replace(record, **changes)


async def rerun_unchecked(
    store: Store, crypto: PatientCrypto, client: TeleserviceClient, *, limit: int = 50
) -> dict[str, int]:
    """Re-run queued checks (worker task); counts of what each became."""
    counts = {"checked": 0, "not_found": 0, "unchecked": 0, "skipped": 0}
    for item in _repository.unchecked(store, limit):
        try:
            done = await run_check(
                store,
                crypto,
                client,
                item.entity.kind,
                item.entity.patient_id,
                actor=ACTOR_WORKER,
                check_id=item.entity_id,
            )
        except (PatientNotFound, MissingNir, TeleserviceError):
            counts["skipped"] += 1
            continue
        counts[done.entity.status] += 1
    return counts


def checks_of(store: Store, patient_id: str) -> list[Versioned[CheckRecord]]:
    return _repository.checks_of(store, patient_id)


class FseNotFound(Exception):
    pass


def sign_fse(store: Store, fse_id: str, signer: FseSigner, *, actor: str) -> Versioned[Fse]:
    """Sign a created FSE (the signature covers :func:`fse_signed_bytes`); raises
    :class:`FseNotFound`, :class:`StateError` or :class:`SignerUnavailable`."""
    with store.write() as db:
        item = _repository.get_fse(db, fse_id)
        if item is None:
            raise FseNotFound(fse_id)
        if item.entity.state != "created":
            raise StateError(
                f"La FSE n° {item.entity.number} est déjà « {item.entity.state} » : "
                "seule une FSE créée se signe."
            )
        signature = signer.sign(fse_signed_bytes(item.entity))
        return _repository.move_fse(db, item, "signed", actor=actor, signature=signature)


def send_signed(
    store: Store, *, actor: str, limit: int = 500
) -> tuple[Versioned[Lot], dict[str, Any]] | None:
    """Group the signed FSEs into one lot handed to the outbox (stream ``fse``), in one
    transaction; ``None`` when no FSE is waiting."""
    with store.write() as db:
        rows = db.execute(
            "SELECT fse_id FROM sesam_fse_index WHERE state = 'signed' ORDER BY number LIMIT ?",
            [limit],
        ).fetchall()
        fses = [item for row in rows if (item := _repository.get_fse(db, str(row[0])))]
        if not fses:
            return None
        return _repository.create_lot(db, fses, actor=actor)


def register_tasks(huey: Huey, platform: Platform) -> None:
    """Every 5 minutes, re-run the checks queued while a teleservice was down."""
    import asyncio

    from huey import crontab

    from services.patients import patient_crypto

    client = TeleserviceClient.from_settings(platform.settings)

    @huey.periodic_task(crontab(minute="*/5"))  # type: ignore[untyped-decorator]
    def sesam_rerun_unchecked() -> None:
        asyncio.run(rerun_unchecked(platform.store, patient_crypto(platform.settings), client))


def _cli() -> Any:
    from services.sesam_vitale.cli import sesam

    return sesam


PLUGIN = ServicePlugin(
    name="sesam_vitale",
    migrations=MIGRATIONS,
    register_tasks=register_tasks,
    cli=_cli(),
)

__all__ = [
    "PLUGIN",
    "BillingRuleError",
    "CpsFseSigner",
    "Fse",
    "FseNotFound",
    "FseSigner",
    "MissingNir",
    "PatientNotFound",
    "ReturnFormatError",
    "ReturnOutcome",
    "SignerUnavailable",
    "SoftwareKeySigner",
    "StateError",
    "TariffError",
    "TeleserviceClient",
    "TeleserviceError",
    "TeleserviceUnavailable",
    "apply_records",
    "apply_return",
    "billed_step",
    "check_message",
    "checks_of",
    "coverage_facts",
    "create_fse",
    "fse_history",
    "fse_signed_bytes",
    "gateway_return",
    "get_fse",
    "get_lot",
    "latest_rights",
    "list_fses",
    "list_lots",
    "lot_history",
    "lot_payload",
    "next_fse_number",
    "price_step",
    "rerun_unchecked",
    "run_check",
    "send_signed",
    "sign_fse",
    "tariff",
    "verify_signature",
]
