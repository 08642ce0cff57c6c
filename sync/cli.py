"""``hygie sync run | status | enroll | init-tenant-key``."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import click
import msgspec

from appliance.commands import cli_settings, fail, operator_errors, platform_session
from appliance.keys import write_secret
from sync import logic
from sync.agent import CLIENT_CERT, CLIENT_KEY, CLOUD_CA, GATEWAY_KEY, TENANT_KEY, SyncNotConfigured


@click.group("sync")
def sync() -> None:
    """Synchronisation avec le service cloud (file d'envoi, état, inscription)."""


@sync.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON output")
def sync_status(as_json: bool) -> None:
    """Show backlog size, oldest pending item, last success and breaker state."""
    with platform_session() as platform:
        current = logic.status(platform.store, platform.settings)
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(current), indent=2))
        return
    oldest = current.oldest_pending
    click.echo(f"configured:      {'yes' if current.configured else 'no'}")
    click.echo(f"tenant:          {current.tenant or '-'}")
    click.echo(f"backlog:         {current.backlog}")
    click.echo(
        "oldest pending:  "
        + (f"#{oldest.seq} {oldest.stream}/{oldest.kind} {oldest.created_at}" if oldest else "-")
    )
    click.echo(f"acked through:   {current.acked_through} / {current.last_sequence}")
    click.echo(f"last success:    {current.last_success_at or '-'}")
    click.echo(f"last error:      {current.last_error or '-'}")
    click.echo(f"last refusal:    {current.last_refusal or '-'}")
    click.echo(f"breaker:         {current.breaker}")


@sync.command("run")
@click.option("--max-batches", type=click.IntRange(min=1), default=None)
def sync_run(max_batches: int | None) -> None:
    """Push pending items to the cloud now, then pull the feed."""
    with platform_session() as platform:
        try:
            report = logic.run_once(platform.store, platform.settings, max_batches=max_batches)
        except SyncNotConfigured as exc:
            fail(f"synchronisation non configurée : {exc}")
    if report is None:
        fail("une synchronisation est déjà en cours sur cet appareil")
    click.echo(
        f"pushed {report.pushed} (duplicates {report.duplicates}) in {report.batches} batches, "
        f"received {report.received}, backlog {report.backlog}"
    )
    if report.refused:
        fail(f"lot refusé par le cloud : {report.refused}")
    if not report.ok:
        fail(f"cloud injoignable, nouvel essai plus tard : {report.error}")


@sync.command("enroll")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--gateway-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def sync_enroll(cert: Path, key: Path, ca: Path, gateway_key: Path | None) -> None:
    """Install the client certificate issued by the cloud (and create the tenant key)."""
    settings = cli_settings()
    with operator_errors():
        settings.key_path.mkdir(parents=True, exist_ok=True, mode=0o700)
        for source, name in (
            (cert, CLIENT_CERT),
            (key, CLIENT_KEY),
            (ca, CLOUD_CA),
            (gateway_key, GATEWAY_KEY),
        ):
            if source is not None:
                write_secret(settings.key_path / name, source.read_bytes())
        created = _init_tenant_key(settings.key_path)
    click.echo(f"certificats installés dans {settings.key_path}")
    if created:
        click.echo(
            f"clé de chiffrement du tenant créée : {settings.key_path / TENANT_KEY} "
            "(sauvegardez-la : sans elle, les données du cloud sont illisibles)"
        )


def _init_tenant_key(key_dir: Path) -> bool:
    path = key_dir / TENANT_KEY
    if path.exists():
        return False
    write_secret(path, secrets.token_hex(32).encode() + b"\n")
    return True


@sync.command("init-tenant-key")
def sync_init_tenant_key() -> None:
    """Create the tenant's end-to-end key if missing (never overwrites)."""
    settings = cli_settings()
    with operator_errors():
        created = _init_tenant_key(settings.key_path)
    click.echo("créée" if created else f"déjà présente : {settings.key_path / TENANT_KEY}")


__all__ = ["sync"]
