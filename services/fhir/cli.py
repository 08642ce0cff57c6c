"""``hygie fhir import FILE`` and ``hygie fhir export PATIENT``: the same import and export
as the API, for files, audited as ``system:cli``. Errors end with one line and an exit code."""

from __future__ import annotations

import json
import sys
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
from services.fhir.models import ImportReport
from services.fhir.store import BundleError, everything, import_bundle
from services.patients import patient_crypto
from services.patients.api import today

ACTOR = CLI_ACTOR
EXIT_REJECTED = 5


def _audit(platform: Platform, action: str, object_type: str, object_id: str, outcome: str) -> None:
    audit_cli(platform, action, object_type, object_id, outcome, purpose="care")


@click.group("fhir")
def fhir() -> None:
    """FHIR R4 bundles: import a file, export a patient."""


@fhir.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def import_command(file: Path) -> None:
    """Import a FHIR R4 Bundle (collection or transaction) from FILE; prints the report."""
    if not file.is_file():
        fail(f"{file}: no such file", EXIT_USAGE)
    with platform_session() as platform:
        limit = platform.settings.max_body_bytes
        size = file.stat().st_size
        if size > limit:
            fail(
                f"{file}: {size / 1e6:.1f} MB is more than the {limit / 1e6:.1f} MB limit "
                "(max_body_bytes)",
                EXIT_USAGE,
            )
        try:
            bundle = json.loads(file.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            fail(f"{file}: not JSON ({exc})", EXIT_USAGE)
        try:
            crypto = patient_crypto(platform.settings)
        except SecretError as exc:
            fail(str(exc), EXIT_FAILURE)
        try:
            report: ImportReport = import_bundle(
                platform.store, crypto, bundle, actor=ACTOR, today=today(platform)
            )
        except BundleError as exc:
            fail(f"{file}: {exc}", EXIT_USAGE)
        with platform.audit.store.write():
            outcome = "success" if report.rejected == 0 else "rejected"
            _audit(platform, "fhir_import", "fhir_bundle", report.bundle_type, outcome)
            for target in sorted({e.target for e in report.entries if e.target}):
                object_type, _, object_id = target.partition("/")
                _audit(platform, "fhir_import", object_type, object_id, "success")
        click.echo(msgspec.json.format(msgspec.json.encode(report)).decode())
        if report.rejected:
            click.echo(
                f"hygie: {report.rejected} entr{'y' if report.rejected == 1 else 'ies'} "
                + ("rejected, nothing stored" if not report.stored else "rejected"),
                err=True,
            )
            sys.exit(EXIT_REJECTED)


@fhir.command("export")
@click.argument("patient")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None)
def export_command(patient: str, output: Path | None) -> None:
    """Export PATIENT (its id) as a FHIR R4 Bundle, to stdout or --output."""
    with platform_session() as platform:
        try:
            crypto = patient_crypto(platform.settings)
        except SecretError as exc:
            fail(str(exc), EXIT_FAILURE)
        bundle = everything(platform.store, crypto, patient, today=today(platform))
        if bundle is None:
            _audit(platform, "fhir_export", "patient", patient[:64], "not_found")
            fail(f"no patient '{patient}'", EXIT_USAGE)
        _audit(platform, "fhir_export", "patient", patient, "success")
        text = msgspec.json.format(msgspec.json.encode(bundle)).decode()
        if output:
            output.write_text(text + "\n", encoding="utf-8")
        else:
            click.echo(text)
