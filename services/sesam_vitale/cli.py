"""``hygie sesam ...``: the local teleservice simulator, checks, tariff, signing and lots.

Mirrors the ``/api/v1/billing`` routes of the same operations; audited as ``system:cli``.
Messages for counter staff are in French; errors end with one line and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import click
import msgspec
from cryptography import x509

from appliance.commands import (
    CLI_ACTOR,
    EXIT_FAILURE,
    EXIT_USAGE,
    audit_cli,
    cli_settings,
    fail,
    platform_session,
)
from appliance.keys import SecretError
from appliance.platform import Platform

ACTOR = CLI_ACTOR


def _audit(platform: Platform, action: str, object_type: str, object_id: str, outcome: str) -> None:
    audit_cli(platform, action, object_type, object_id, outcome, purpose="billing")


@click.group("sesam")
def sesam() -> None:
    """SESAM-Vitale: teleservice simulator, rights/INSi checks, tariff, FSE signing, lots."""


@sesam.command("simulate")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Beneficiaries JSON file (default: the built-in demo set).",
)
@click.option(
    "--trust",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="PEM certificate of the CA whose FSE signatures are accepted.",
)
def simulate(port: int, data: Path | None, trust: Path | None) -> None:
    """Run the LOCAL SIMULATOR of the ADRi, INSi and teletransmission services on loopback."""
    from services.sesam_vitale.simulator import Simulator, SimulatorServer, load_sim_data

    try:
        sim_data = load_sim_data(data)
        anchors = [x509.load_pem_x509_certificate(trust.read_bytes())] if trust else None
    except (OSError, ValueError, msgspec.DecodeError) as exc:
        fail(f"simulateur : fichier illisible ({exc})", EXIT_USAGE)
    try:
        server = SimulatorServer(Simulator(sim_data, anchors), port=port).start()
    except OSError as exc:
        fail(f"simulateur : port {port} indisponible ({exc})", EXIT_FAILURE)
    click.echo(f"SIMULATEUR LOCAL des téléservices (tests et démonstration) sur {server.url}")
    click.echo(f"  HYGIE_SESAM_ADRI_URL={server.url}")
    click.echo(f"  HYGIE_SESAM_INSI_URL={server.url}")
    click.echo(f"  HYGIE_SESAM_TRANSMISSION_URL={server.url}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


@sesam.command("tariff")
def tariff_command() -> None:
    """Print the tariff editions in force: codes, amounts, sources and doubts (JSON)."""
    from services.sesam_vitale import TariffError, tariff

    settings = cli_settings()
    try:
        editions = tariff(settings.billing_tariff_file)
    except TariffError as exc:
        fail(f"tarification illisible : {exc}", EXIT_FAILURE)
    click.echo(msgspec.json.format(msgspec.json.encode(list(editions))).decode())


@sesam.command("check")
@click.argument("kind", type=click.Choice(["rights", "insi"]))
@click.argument("patient_id")
def check_command(kind: str, patient_id: str) -> None:
    """Check a patient's rights (ADRi) or INS (INSi); queued when the teleservice is down."""
    from services.patients import patient_crypto
    from services.sesam_vitale import (
        MissingNir,
        PatientNotFound,
        TeleserviceClient,
        TeleserviceError,
        check_message,
        run_check,
    )

    with platform_session() as platform:
        try:
            crypto = patient_crypto(platform.settings)
        except SecretError as exc:
            fail(str(exc), EXIT_FAILURE)
        client = TeleserviceClient.from_settings(platform.settings)
        try:
            done = asyncio.run(
                run_check(platform.store, crypto, client, kind, patient_id, actor=ACTOR)  # type: ignore[arg-type]
            )
        except PatientNotFound:
            _audit(platform, f"sesam_check_{kind}", "patient", patient_id[:64], "not_found")
            fail(f"patient inconnu : {patient_id}", EXIT_USAGE)
        except MissingNir:
            _audit(platform, f"sesam_check_{kind}", "patient", patient_id, "refused")
            fail("le NIR du patient n'est pas renseigné", EXIT_FAILURE)
        except TeleserviceError as exc:
            _audit(platform, f"sesam_check_{kind}", "patient", patient_id, "failure")
            fail(f"réponse inattendue du téléservice : {exc}", EXIT_FAILURE)
        _audit(platform, f"sesam_check_{kind}", "patient", patient_id, "success")
        click.echo(
            json.dumps(
                {
                    "id": done.entity_id,
                    "status": done.entity.status,
                    "message": check_message(done.entity),
                },
                ensure_ascii=False,
            )
        )


@sesam.command("rerun")
def rerun_command() -> None:
    """Re-run the checks queued while a teleservice was down (what the worker does)."""
    from services.patients import patient_crypto
    from services.sesam_vitale import TeleserviceClient, rerun_unchecked

    with platform_session() as platform:
        try:
            crypto = patient_crypto(platform.settings)
        except SecretError as exc:
            fail(str(exc), EXIT_FAILURE)
        client = TeleserviceClient.from_settings(platform.settings)
        counts = asyncio.run(rerun_unchecked(platform.store, crypto, client))
        click.echo(json.dumps(counts))


@sesam.command("sign")
@click.argument("fse_id")
@click.option("--cps", is_flag=True, help="Sign with the CPS card in the reader (PIN asked).")
def sign_command(fse_id: str, cps: bool) -> None:
    """Sign a created FSE: with the CPS card (--cps), else the software key of the key
    directory (tests and demos)."""
    from services.sesam_vitale import (
        CpsFseSigner,
        FseNotFound,
        FseSigner,
        SignerUnavailable,
        SoftwareKeySigner,
        StateError,
        get_fse,
        sign_fse,
    )

    with platform_session() as platform:
        if get_fse(platform.store.db, fse_id) is None:
            fail(f"FSE inconnue : {fse_id}", EXIT_USAGE)
        signer: FseSigner | None
        if cps:
            pin = click.prompt("Code PIN de la carte CPS", hide_input=True)
            signer = CpsFseSigner(platform.settings, pin)
        else:
            signer = SoftwareKeySigner.from_dir(platform.settings.key_path)
        if signer is None:
            fail(
                "aucun signataire : insérez la carte CPS ou installez une clé de signature",
                EXIT_FAILURE,
            )
        try:
            signed = sign_fse(platform.store, fse_id, signer, actor=ACTOR)
        except FseNotFound:
            fail(f"FSE inconnue : {fse_id}", EXIT_USAGE)
        except (StateError, SignerUnavailable) as exc:
            _audit(platform, "fse_sign", "fse", fse_id, "refused")
            fail(str(exc), EXIT_FAILURE)
        _audit(platform, "fse_sign", "fse", fse_id, "success")
        click.echo(json.dumps({"id": signed.entity_id, "state": signed.entity.state}))


@sesam.command("send")
def send_command() -> None:
    """Group the signed FSEs into a lot handed to the sync outbox (stream 'fse')."""
    from services.sesam_vitale import send_signed

    with platform_session() as platform:
        made = send_signed(platform.store, actor=ACTOR)
        if made is None:
            click.echo("Aucune FSE signée en attente d'envoi.")
            return
        lot, _ = made
        _audit(platform, "fse_lot_send", "fse_lot", lot.entity_id, "success")
        click.echo(
            json.dumps(
                {
                    "lot_id": lot.entity_id,
                    "number": lot.entity.number,
                    "fse": len(lot.entity.fse_ids),
                    "state": lot.entity.state,
                }
            )
        )
