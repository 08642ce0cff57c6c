"""``hygie cards``: read the card in a reader, list readers, watch events, insert a virtual
card (development and tests).

``hygie cards read --json`` is a contract other tools depend on (docs/cards.md): one JSON
object on stdout, exit 0; on failure ``{"error": code, "message": French text}`` on stdout
and exit 1.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from appliance.audit import AuditEvent
from appliance.commands import EXIT_FAILURE, cli_settings, fail
from appliance.config import Settings
from appliance.keys import SecretError
from appliance.platform import open_platform
from appliance.store import StoreError
from drivers.cps_vitale import CardError, CardMonitor, VitaleCard, list_readers
from drivers.cps_vitale.errors import AuditUnavailable
from drivers.cps_vitale.virtual import VpcdLink, load_card
from services.cards import logic
from services.patients import patient_crypto

ACTOR = "system:cli"


def _emit(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False))


def _card_failure(exc: CardError, as_json: bool) -> None:
    if as_json:
        _emit(exc.as_json())
        sys.exit(EXIT_FAILURE)
    fail(exc.message)


def _audit_vitale(settings: Settings, card: VitaleCard, as_json: bool) -> None:
    """A Vitale read is patient data access: audited before anything is printed, and
    refused when the audit log cannot be written (fail closed)."""

    def event(object_id: str, outcome: str) -> AuditEvent:
        return AuditEvent(
            actor=ACTOR,
            role="system",
            action="vitale.read",
            object_type="patient",
            object_id=object_id,
            purpose="care",
            client_addr="local",
            outcome=outcome,
        )

    try:
        platform = open_platform(settings, with_tokens=False)
    except (SecretError, StoreError) as exc:
        _card_failure(AuditUnavailable(detail=str(exc)), as_json)
        return
    try:
        try:
            crypto = patient_crypto(settings)
        except SecretError:
            crypto = None
        logic.match_and_audit(platform.store, platform.audit, crypto, card, event)
    except StoreError as exc:
        _card_failure(AuditUnavailable(detail=str(exc)), as_json)
    finally:
        platform.close()


@click.group(help="Lecteurs de cartes : Vitale et CPS (pcscd).")
def cards() -> None:
    """Card readers at the counter."""


@cards.command("read")
@click.option("--reader", "reader", default=None, help="Reader name (default: first with a card).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, 300), default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (the contract).")
def read_command(reader: str | None, timeout_s: float | None, as_json: bool) -> None:
    """Wait for a card and read it (Vitale beneficiaries or CPS holder, no PIN)."""
    settings = cli_settings()
    try:
        card = logic.read(settings, reader, timeout_s)
    except CardError as exc:
        _card_failure(exc, as_json)
        return
    if isinstance(card, VitaleCard):
        _audit_vitale(settings, card, as_json)
    if as_json:
        _emit(card.as_json())
        return
    if isinstance(card, VitaleCard):
        click.echo(f"Carte Vitale ({card.reader}), {len(card.beneficiaries)} bénéficiaire(s) :")
        for b in card.beneficiaries:
            click.echo(f"  {b.surname} {b.first_name}, né(e) le {b.birth_date}, NIR {b.nir}")
    else:
        holder = card.holder
        click.echo(
            f"Carte CPS ({card.reader}) : {holder.first_name} {holder.surname}, "
            f"{holder.profession}, RPPS {holder.rpps or '-'}"
        )


@cards.command("readers")
@click.option("--json", "as_json", is_flag=True)
def readers_command(as_json: bool) -> None:
    """List the readers pcscd knows and whether a card is in each."""
    try:
        found = list_readers(logic.card_config(cli_settings()))
    except CardError as exc:
        _card_failure(exc, as_json)
        return
    if as_json:
        _emit(
            {
                "readers": [
                    {"name": r.name, "card_present": r.present, "atr": r.atr.hex().upper()}
                    for r in found
                ]
            }
        )
        return
    if not found:
        click.echo("Aucun lecteur de carte.")
    for r in found:
        click.echo(f"{r.name}: {'carte présente' if r.present else 'vide'}")


@cards.command("watch")
@click.option("--count", type=click.IntRange(1, 10_000), default=None, help="Stop after N.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 86_400), default=None)
def watch_command(count: int | None, timeout_s: float | None) -> None:
    """Print card events (one JSON object per line) as the reader monitor sees them."""
    seen = threading.Semaphore(0)

    def publish(event: Any) -> None:
        _emit(
            {"kind": event.kind, "reader": event.reader, "atr": event.atr, "at": event.at}
            | ({"message": event.message} if event.message else {})
        )
        seen.release()

    monitor = CardMonitor(publish, hide_virtual=not cli_settings().uses_virtual_card_readers)
    monitor.start()
    deadline = time.monotonic() + timeout_s if timeout_s else None
    received = 0
    try:
        while count is None or received < count:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                break
            if seen.acquire(timeout=wait if wait is not None else 1.0):
                received += 1
    finally:
        monitor.stop()


@cards.command("simulate")
@click.option("--vitale", "vitale", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--cps", "cps", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--slot", type=click.IntRange(0, 1), default=0, help="vpcd slot (reader 00 0N).")
@click.option("--seconds", type=click.FloatRange(0.1, 86_400), default=None, help="Then remove.")
def simulate_command(
    vitale: Path | None, cps: Path | None, slot: int, seconds: float | None
) -> None:
    """Insert a virtual card described by a JSON file into the vpcd reader (development).

    The card stays in until Ctrl-C (or ``--seconds``); the reader is "Virtual PCD 00 0N".
    """
    if (vitale is None) == (cps is None):
        fail("indiquez une carte : --vitale FICHIER ou --cps FICHIER", 2)
    settings = cli_settings()
    if not settings.uses_virtual_card_readers:
        fail(
            "les lecteurs virtuels sont ignorés sur cette appliance (cards_virtual_readers) : "
            "la carte simulée ne serait pas lue",
            2,
        )
    try:
        card = load_card("vitale" if vitale else "cps", vitale or cps)  # type: ignore[arg-type]
        link = VpcdLink(card, port=settings.cards_vpcd_port + slot)
        link.insert()
    except CardError as exc:
        fail(exc.message)
    click.echo(f"Carte virtuelle insérée (lecteur vpcd, emplacement {slot}).", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and not link.stopped.is_set():
            stop.wait(seconds if seconds is not None else 0.5)
            if seconds is not None:
                break
    except KeyboardInterrupt:
        pass
    finally:
        link.remove()
    click.echo("Carte virtuelle retirée.", err=True)
