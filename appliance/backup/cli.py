"""``hygie backup create | verify | restore | init-key`` (messages for the pharmacist in French)."""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from appliance.backup.core import (
    BACKUP_KEY,
    DEFAULT_LOG2_N,
    BackupError,
    create_backup,
    load_backup_key,
    restore_backup,
    verify_backup,
)
from appliance.backup.crypto import BackupCryptoError, KeySource
from appliance.commands import cli_settings, fail, operator_errors
from appliance.config import Settings
from appliance.keys import SecretError, write_secret

_file = click.Path(exists=True, dir_okay=False, path_type=Path)


def _source(
    settings: Settings, passphrase_file: Path | None, key_file: Path | None, *, confirm: bool
) -> KeySource:
    if passphrase_file is not None:
        text = passphrase_file.read_text(encoding="utf-8").rstrip("\r\n")
        return KeySource(passphrase=text)
    if key_file is not None:
        try:
            return KeySource(key=bytes.fromhex(key_file.read_text().strip()))
        except ValueError:
            fail(f"fichier de clé illisible : {key_file}")
    try:
        return KeySource(key=load_backup_key(settings))
    except SecretError:
        pass
    phrase = click.prompt(
        "Phrase de récupération", hide_input=True, confirmation_prompt=confirm, err=True
    )
    return KeySource(passphrase=phrase)


def _options(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option("--key-file", type=_file, help="fichier de clé (256 bits en hexadécimal)")(
        func
    )
    return click.option(
        "--passphrase-file", type=_file, help="fichier contenant la phrase de récupération"
    )(func)


@click.group("backup")
def backup() -> None:
    """Sauvegardes chiffrées : créer, vérifier, restaurer."""


@backup.command("create")
@_options
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path))
def backup_create(
    passphrase_file: Path | None, key_file: Path | None, output_dir: Path | None
) -> None:
    """Write an encrypted, verified backup (and the emergency kit)."""
    settings = cli_settings()
    source = _source(settings, passphrase_file, key_file, confirm=True)
    with operator_errors():
        try:
            report = create_backup(
                settings, source, out_dir=output_dir, log2_n=settings.backup_kdf_log2_n
            )
        except (BackupError, BackupCryptoError) as exc:
            fail(f"sauvegarde impossible : {exc}")
    click.echo(f"sauvegarde écrite et vérifiée : {report.path}")
    click.echo(f"SHA-256 {report.sha256} ({report.size} octets)")
    if report.kit is not None:
        click.echo(f"kit de secours : {report.kit}")


@backup.command("verify")
@click.argument("path", type=_file)
@_options
def backup_verify(path: Path, passphrase_file: Path | None, key_file: Path | None) -> None:
    """Decrypt a backup and check every file and every database."""
    settings = cli_settings()
    source = _source(settings, passphrase_file, key_file, confirm=False)
    try:
        report = verify_backup(path, source)
    except (BackupError, BackupCryptoError) as exc:
        fail(f"sauvegarde invalide : {exc}")
    tables = sum(len(t) for t in report.tables.values())
    click.echo(f"sauvegarde valide : {report.files} fichiers, {tables} tables vérifiées")


@backup.command("restore")
@click.argument("path", type=_file)
@_options
@click.option("--force", is_flag=True, help="remplacer une installation existante")
def backup_restore(
    path: Path, passphrase_file: Path | None, key_file: Path | None, force: bool
) -> None:
    """Restore a backup onto a fresh install (refuses to overwrite one)."""
    settings = cli_settings()
    source = _source(settings, passphrase_file, key_file, confirm=False)
    with operator_errors():
        try:
            report = restore_backup(settings, path, source, force=force)
        except (BackupError, BackupCryptoError) as exc:
            fail(f"restauration impossible : {exc}")
    click.echo(f"restauration terminée : {', '.join(report.checked)} vérifiées")
    click.echo("lancez ensuite : hygie db migrate")


@backup.command("init-key")
def backup_init_key() -> None:
    """Create the key of the scheduled backups (never overwrites) and show it once."""
    settings = cli_settings()
    path = settings.key_path / BACKUP_KEY
    if path.exists():
        fail(f"une clé de sauvegarde existe déjà : {path}")
    key = secrets.token_hex(32)
    with operator_errors():
        write_secret(path, key.encode() + b"\n")
    groups = " ".join(key[i : i + 8] for i in range(0, len(key), 8))
    click.echo(f"clé de sauvegarde créée : {path}")
    click.echo("Recopiez-la sur papier et rangez-la avec le kit de secours :")
    click.echo(groups)


__all__ = ["DEFAULT_LOG2_N", "backup"]
