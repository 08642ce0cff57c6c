"""The ``hygie`` command line: serve, worker, database, audit, keys and configuration.

Every failure an operator can cause (bad configuration, missing or wrong key, tampered audit
log) ends with a one-line message on stderr and a documented exit code, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from appliance import __version__
from appliance.commands import (
    EXIT_FAILURE,
    cli_settings,
    fail,
    operator_errors,
)
from appliance.config import Settings, settings_for_display
from appliance.keys import (
    CREDENTIALS_ENV,
    MASTER_KEY,
    init_secrets,
    load_master_key,
    new_master_key_text,
    parse_master_key,
    secret_path,
    write_secret,
)
from appliance.tls import tls as tls_commands


def _settings() -> Settings:
    return cli_settings()


@click.group(help="Hygie appliance: Bilan Partagé de Médication at the pharmacy counter.")
def main() -> None:
    """Entry point of the ``hygie`` console script."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"hygie {__version__}")


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
def config_show() -> None:
    """Print the effective settings (secrets masked) as JSON."""
    click.echo(json.dumps(settings_for_display(_settings()), indent=2, sort_keys=True))


@main.group()
def keys() -> None:
    """Manage the appliance's secrets."""


@keys.command("init")
def keys_init() -> None:
    """Create missing secrets (master, audit signing, JWT and field keys); never overwrite."""
    settings = _settings()
    with operator_errors():
        created = init_secrets(settings)
    for path in created:
        click.echo(f"created {path}")
    if not created:
        click.echo(f"all secrets already present in {settings.key_path}")


@main.group()
def db() -> None:
    """Encrypted databases: migrate, check, rekey."""


@db.command("migrate")
def db_migrate() -> None:
    """Create the databases if needed and apply pending schema migrations."""
    from appliance.audit import AUDIT_MIGRATIONS
    from appliance.platform import audit_key, domain_key
    from appliance.registry import domain_migrations
    from appliance.store import Store, apply_migrations

    settings = _settings()
    with operator_errors():
        master = load_master_key(settings)
        targets = [
            (settings.domain_db_path, domain_key(master), domain_migrations()),
            (settings.audit_db_path, audit_key(master), list(AUDIT_MIGRATIONS)),
        ]
        for path, key, migrations in targets:
            store = Store.open(path, key, busy_timeout_ms=settings.busy_timeout_ms, create=True)
            try:
                done = apply_migrations(store, migrations)
            finally:
                store.close()
            for migration in done:
                step = f"{migration.component} {migration.version} ({migration.name})"
                click.echo(f"{path.name}: applied {step}")
            if not done:
                click.echo(f"{path.name}: schema up to date")


@db.command("check")
def db_check() -> None:
    """Open each database with its key, check integrity and schema version."""
    from appliance.audit import AUDIT_MIGRATIONS
    from appliance.platform import audit_key, domain_key
    from appliance.registry import domain_migrations
    from appliance.store import Store, pending_migrations

    settings = _settings()
    problems = 0
    with operator_errors():
        master = load_master_key(settings)
        targets = [
            (settings.domain_db_path, domain_key(master), domain_migrations()),
            (settings.audit_db_path, audit_key(master), list(AUDIT_MIGRATIONS)),
        ]
        for path, key, migrations in targets:
            store = Store.open(path, key, busy_timeout_ms=settings.busy_timeout_ms)
            try:
                integrity = store.db.execute("PRAGMA integrity_check").fetchall()
                cipher = store.db.execute("PRAGMA cipher_integrity_check").fetchall()
                pending = pending_migrations(store, migrations)
            finally:
                store.close()
            if integrity != [("ok",)] or cipher:
                problems += 1
                click.echo(f"{path.name}: INTEGRITY FAILURE {integrity[:3]} {cipher[:3]}")
            elif pending:
                problems += 1
                click.echo(
                    f"{path.name}: {len(pending)} pending migration(s): run 'hygie db migrate'"
                )
            else:
                click.echo(f"{path.name}: ok (key opens it, integrity ok, schema current)")
    if problems:
        sys.exit(EXIT_FAILURE)


@db.command("rekey")
def db_rekey() -> None:
    """Rotate the master key and re-encrypt both databases (stop the services first).

    The new key is saved as ``master.key.next`` before any database changes, so an
    interrupted rotation is finished by running the command again.
    """
    from appliance.platform import audit_key, domain_key
    from appliance.store import StoreKeyError, rekey_database
    from appliance.store.sqlcipher import open_connection

    settings = _settings()
    with operator_errors():
        current_path = secret_path(settings, MASTER_KEY)
        if os.environ.get(CREDENTIALS_ENV) and current_path.is_relative_to(
            Path(os.environ[CREDENTIALS_ENV])
        ):
            fail(
                "the master key comes from a systemd credential: run 'hygie db rekey' as root "
                "outside the unit, then re-encrypt the credential (sudo ./install.sh --prod)",
                EXIT_FAILURE,
            )
        current = load_master_key(settings)
        next_path = settings.key_path / f"{MASTER_KEY}.next"
        if next_path.exists():
            new = parse_master_key(next_path.read_bytes(), str(next_path))
            click.echo("resuming an interrupted rotation")
        else:
            raw = new_master_key_text()
            write_secret(next_path, raw)
            new = parse_master_key(raw, str(next_path))
        for path, derive in (
            (settings.domain_db_path, domain_key),
            (settings.audit_db_path, audit_key),
        ):
            try:
                open_connection(path, derive(new), busy_timeout_ms=settings.busy_timeout_ms).close()
                click.echo(f"{path.name}: already under the new key")
                continue
            except StoreKeyError:
                pass
            rekey_database(path, derive(current), derive(new), settings.busy_timeout_ms)
            click.echo(f"{path.name}: re-encrypted under the new key")
        write_secret(settings.key_path / f"{MASTER_KEY}.previous", current.hex().encode() + b"\n")
        os.replace(next_path, settings.key_path / MASTER_KEY)
        click.echo("master key rotated; the previous key is kept as master.key.previous")


@main.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the hash chain and signed checkpoints; exit 1 at the first problem."""
    from appliance.audit import format_result, open_audit_log

    settings = _settings()
    with operator_errors():
        log = open_audit_log(settings, load_master_key(settings))
        try:
            result = log.verify()
        finally:
            log.store.close()
    click.echo(format_result(result))
    if not result.ok:
        sys.exit(EXIT_FAILURE)


@audit.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign a checkpoint at the latest entry now."""
    from appliance.audit import open_audit_log

    settings = _settings()
    with operator_errors():
        log = open_audit_log(settings, load_master_key(settings))
        try:
            checkpoint = log.checkpoint()
        finally:
            log.store.close()
    click.echo(f"checkpoint at seq {checkpoint.seq}" if checkpoint else "nothing new to sign")


@main.command()
@click.option("--host", default=None, help="Address to bind (default from settings: 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Port (default 8000).")
@click.option(
    "--tls/--no-tls",
    default=None,
    help="Serve HTTPS, TLS 1.3 only (default: on in prod, off in dev; see 'hygie tls init').",
)
@click.option(
    "--grpc",
    "grpc_port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Also serve the LLM gRPC interface on this port (same host).",
)
def serve(host: str | None, port: int | None, tls: bool | None, grpc_port: int | None) -> None:
    """Run the HTTP(S) server (and, in dev, a task worker beside it)."""
    import uvicorn

    from appliance.tls import uvicorn_config

    settings = _settings()
    use_tls = settings.serves_tls if tls is None else tls
    with operator_errors():
        config = uvicorn_config(
            settings,
            "appliance.app:create_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            tls=use_tls,
        )
    if settings.public_url is None and (host or port or tls is not None):
        # The OpenID issuer (and the iss of every token) comes from the settings, not from
        # these flags, so that tokens minted by other processes stay valid.
        click.echo(
            f"hygie: the OpenID issuer stays {settings.issuer_url}; set HYGIE_PUBLIC_URL "
            "to the address the terminals use",
            err=True,
        )
    stop_grpc = None
    if grpc_port is not None:
        from services.llm.rpc.server import start_for_settings

        with operator_errors():
            try:
                stop_grpc = start_for_settings(settings, host=host or settings.host, port=grpc_port)
            except OSError as exc:
                fail(str(exc))
    worker = _spawn_worker() if settings.runs_embedded_worker else None
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        # uvicorn re-raises the SIGINT it handled once it has shut down; with the gRPC
        # threads running that surfaces here: the server stopped as asked, not an error.
        if stop_grpc is None:
            raise
    finally:
        if stop_grpc is not None:
            stop_grpc()
        if worker is not None:
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()


def _spawn_worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "appliance.cli", "worker"])


@main.command()
def worker() -> None:
    """Run the huey task consumer (periodic heartbeat, audit checkpoints, service tasks)."""
    from appliance.observability import configure_logging
    from appliance.platform import open_platform
    from appliance.registry import INSTALLED_SERVICES
    from appliance.tasks import create_huey, register_tasks

    settings = _settings()
    configure_logging(settings)
    with operator_errors():
        platform = open_platform(settings, with_tokens=False)
    huey = create_huey(settings)
    register_tasks(huey, platform, INSTALLED_SERVICES)
    consumer = huey.create_consumer(workers=settings.worker_threads, worker_type="thread")
    try:
        consumer.run()
    finally:
        platform.close()


def _mount_service_commands() -> None:
    """Each service may bring a command group; the composition root mounts it."""
    from appliance.registry import INSTALLED_SERVICES

    for plugin in INSTALLED_SERVICES:
        if plugin.cli is not None:
            main.add_command(plugin.cli)


_mount_service_commands()


def _mount_demo() -> None:
    """``hygie demo load``: demo data, loaded through the services' public functions."""
    from appliance.demo import demo

    main.add_command(demo)


_mount_demo()
main.add_command(tls_commands)


if __name__ == "__main__":
    main()
