"""``hygie prescriptions extract FILE [FILE ...]``: read prescription scans and PDFs into the
JSON contract other tools depend on (docs/document_import.md). The reading itself is the
document_import service's; this group is the prescriptions service's command line."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import click
import msgspec

from appliance.commands import CLI_ACTOR, EXIT_USAGE, audit_cli, fail, platform_session
from appliance.platform import Platform

ACTOR = CLI_ACTOR
EXIT_UNREADABLE = 6
"""At least one file could not be read (the others were printed)."""


@click.group("prescriptions")
def prescriptions() -> None:
    """Prescriptions (ordonnances): extract scans and PDFs."""


@prescriptions.command("extract")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def extract(files: tuple[Path, ...]) -> None:
    """Read FILE(s) (PNG, JPEG, TIFF, PDF) by OCR and print one JSON object per file (JSON
    Lines), products matched to the catalog; unknown values are null."""
    from services.document_import import DocumentError, extract_bytes
    from services.document_import.ocr import MAX_FILE_BYTES, single_thread

    single_thread()
    failed = 0
    encoder = msgspec.json.Encoder()
    with platform_session() as platform:
        for path in files:
            if not path.is_file():
                click.echo(f"hygie: {path} : fichier introuvable", err=True)
                failed += 1
                continue
            if path.stat().st_size > MAX_FILE_BYTES:
                click.echo(
                    f"hygie: {path} : fichier trop volumineux (maximum "
                    f"{MAX_FILE_BYTES // (1024 * 1024)} Mo)",
                    err=True,
                )
                failed += 1
                continue
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            try:
                result = extract_bytes(platform.store, data, str(path))
            except DocumentError as error:
                click.echo(f"hygie: {path} : {error.message}", err=True)
                failed += 1
                _audit(platform, digest, "rejected")
                continue
            _audit(platform, digest, "success")
            sys.stdout.write(encoder.encode(result).decode() + "\n")
            sys.stdout.flush()
    if failed:
        fail(
            f"{failed} fichier(s) sur {len(files)} illisible(s)",
            EXIT_USAGE if failed == len(files) and len(files) == 1 else EXIT_UNREADABLE,
        )


def _audit(platform: Platform, digest: str, outcome: str) -> None:
    """A scan names a patient: reading one is an access to patient data."""
    audit_cli(platform, "extract", "prescription_scan", digest, outcome, purpose="care")
