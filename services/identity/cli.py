"""``hygie users``, ``hygie clients`` and ``hygie tokens``: identity from the box's shell.

Passwords are read from the terminal (twice) or from a file descriptor (``--password-fd``),
never from the command line, where ``ps`` and the shell history would keep them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import click
import msgspec

from appliance.commands import EXIT_USAGE, cli_settings, fail, operator_errors, platform_session
from appliance.problems import Problem
from appliance.store import StoreError, Versioned
from services.identity import store as repo
from services.identity.accounts import CLI_ACTOR, Accounts
from services.identity.api import create_client
from services.identity.models import ClientCreate, User, UserCreate, UserUpdate
from services.identity.roles import ROLES, Role

ADMIN_ROLES = (Role.ADMIN_TECHNIQUE.value, Role.PHARMACIEN_TITULAIRE.value)
MAX_SECRET_BYTES = 4096


def read_password(fd: int | None, prompt: str = "Mot de passe") -> str:
    """From ``fd`` (first line, newline removed) or from the terminal, typed twice."""
    if fd is None:
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read the password from file descriptor {fd}: {exc.strerror}", EXIT_USAGE)
    if len(raw) > MAX_SECRET_BYTES:
        fail("the password read from the file descriptor is too long", EXIT_USAGE)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail("the password read from the file descriptor is not UTF-8", EXIT_USAGE)
    password = text.splitlines()[0] if text else ""
    if not password:
        fail(f"no password on file descriptor {fd}", EXIT_USAGE)
    return password


@contextmanager
def accounts_session() -> Iterator[Accounts]:
    with platform_session() as platform:
        try:
            yield Accounts(platform.settings, platform.store, platform.audit)
        except Problem as exc:
            fail(str(exc.detail))
        except msgspec.ValidationError as exc:
            fail(f"invalid value: {exc}", EXIT_USAGE)
        except StoreError as exc:
            fail(str(exc))


def _find(accounts: Accounts, username: str) -> Versioned[User]:
    item = accounts.by_username(username.strip().lower())
    if item is None:
        fail(f"no user with the login '{username}'")
    return item


def _create(
    username: str, display_name: str, role: str, rpps: str | None, password_fd: int | None
) -> None:
    password = read_password(password_fd)
    with accounts_session() as accounts:
        body = msgspec.convert(
            {
                "username": username.strip().lower(),
                "display_name": display_name,
                "role": role,
                "password": password,
                "rpps": rpps,
            },
            UserCreate,
        )
        saved = accounts.create(body, CLI_ACTOR)
    click.echo(f"created {saved.entity.role.value} '{saved.entity.username}' ({saved.entity_id})")


@click.group("users", help="Staff accounts: create, list, lock, unlock, change roles.")
def users() -> None:
    """Accounts of the pharmacy's staff."""


@users.command("create-admin")
@click.option("--username", default="admin", show_default=True, help="Login of the account.")
@click.option("--display-name", default="Administrateur", show_default=True)
@click.option(
    "--role",
    type=click.Choice(ADMIN_ROLES),
    default=Role.ADMIN_TECHNIQUE.value,
    show_default=True,
    help="admin_technique (no patient data) or pharmacien_titulaire (needs --rpps).",
)
@click.option("--rpps", default=None, help="RPPS number (11 digits), for a pharmacist.")
@click.option("--password-fd", type=int, default=None, help="Read the password from this fd.")
def create_admin(
    username: str, display_name: str, role: str, rpps: str | None, password_fd: int | None
) -> None:
    """Create the first administrator (password typed twice, or read from --password-fd)."""
    _create(username, display_name, role, rpps, password_fd)


@users.command("create")
@click.option("--username", required=True)
@click.option("--display-name", required=True)
@click.option(
    "--role", type=click.Choice([r.value for r in ROLES if ROLES[r].human]), required=True
)
@click.option("--rpps", default=None)
@click.option("--password-fd", type=int, default=None)
def create_user(
    username: str, display_name: str, role: str, rpps: str | None, password_fd: int | None
) -> None:
    """Create an account of any human role."""
    _create(username, display_name, role, rpps, password_fd)


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_users(as_json: bool) -> None:
    """Every account with its role and status (never a secret)."""
    with accounts_session() as accounts:
        items = repo.list_users(accounts.store.db, limit=repo.MAX_USERS)
        rows = [
            {
                "user_id": item.entity_id,
                "username": item.entity.username,
                "role": item.entity.role.value,
                "status": item.entity.status,
                "rpps": item.entity.rpps,
                "locked_for_s": accounts.locked_for(item.entity_id),
                "version": item.version,
            }
            for item in items
        ]
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, sort_keys=True))
        else:
            locked = f" locked {row['locked_for_s']}s" if row["locked_for_s"] else ""
            click.echo(
                f"{row['username']:<24} {row['role']:<22} {row['status']:<10} "
                f"{row['user_id']}{locked}"
            )


def _update(username: str, **changes: str | None) -> None:
    with accounts_session() as accounts:
        item = _find(accounts, username)
        user = item.entity
        body = UserUpdate(
            expected_version=item.version,
            display_name=user.display_name,
            role=Role(changes.get("role") or user.role),
            rpps=changes.get("rpps", user.rpps),
            status=changes.get("status") or user.status,  # type: ignore[arg-type]
        )
        saved = accounts.update(item.entity_id, body, CLI_ACTOR)
    click.echo(
        f"'{saved.entity.username}': role {saved.entity.role.value}, {saved.entity.status} "
        f"(version {saved.version})"
    )


@users.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice([r.value for r in ROLES if ROLES[r].human]))
@click.option("--rpps", default=None, help="RPPS number, when the new role needs one.")
def set_role(username: str, role: str, rpps: str | None) -> None:
    """Change a user's role (their sessions end at once)."""
    if rpps is None:
        _update(username, role=role)
    else:
        _update(username, role=role, rpps=rpps)


@users.command("suspend")
@click.argument("username")
def suspend(username: str) -> None:
    """Suspend an account (its sessions end at once)."""
    _update(username, status="suspended")


@users.command("activate")
@click.argument("username")
def activate(username: str) -> None:
    """Reactivate a suspended account."""
    _update(username, status="active")


@users.command("set-password")
@click.argument("username")
@click.option("--password-fd", type=int, default=None)
def set_password(username: str, password_fd: int | None) -> None:
    """Set a new password (typed twice or read from --password-fd)."""
    password = read_password(password_fd, "Nouveau mot de passe")
    with accounts_session() as accounts:
        item = _find(accounts, username)
        accounts.reset_password(item.entity_id, password, CLI_ACTOR)
    click.echo(f"password of '{username}' changed; their sessions were ended")


@users.command("unlock")
@click.argument("username")
def unlock(username: str) -> None:
    """Clear the failed-login counter of an account."""
    with accounts_session() as accounts:
        item = _find(accounts, username)
        accounts.unlock(item.entity_id, CLI_ACTOR)
    click.echo(f"'{username}' unlocked")


@users.command("revoke-sessions")
@click.argument("username")
def revoke_sessions(username: str) -> None:
    """End every session of a user now."""
    with accounts_session() as accounts:
        item = _find(accounts, username)
        count = accounts.revoke_sessions(item.entity_id, CLI_ACTOR)
    click.echo(f"{count} session(s) of '{username}' revoked")


@click.group("clients", help="OAuth clients: integrations and other user interfaces.")
def clients() -> None:
    """OAuth clients."""


@clients.command("create")
@click.option("--client-id", required=True, help="Identifier, e.g. lgo-sync.")
@click.option("--name", required=True, help="What it is, e.g. 'Synchronisation LGO'.")
@click.option("--kind", type=click.Choice(["confidential", "public"]), default="confidential")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Exact redirect URI.")
@click.option("--scope", "scopes", multiple=True, help="Scope the client may obtain.")
def create_oauth_client(
    client_id: str, name: str, kind: str, redirect_uris: tuple[str, ...], scopes: tuple[str, ...]
) -> None:
    """Register a client; a confidential client's secret is printed once, never again."""
    with accounts_session() as accounts:
        body = msgspec.convert(
            {
                "client_id": client_id,
                "name": name,
                "kind": kind,
                "redirect_uris": list(redirect_uris),
                "scopes": list(scopes),
            },
            ClientCreate,
        )
        saved, secret = create_client(accounts, body, CLI_ACTOR)
    click.echo(f"client_id: {saved.entity.client_id}")
    click.echo(f"grant types: {' '.join(saved.entity.grant_types)}")
    if secret:
        click.echo(f"client_secret: {secret}")
        click.echo("store this secret now: it is not kept and cannot be shown again", err=True)


@clients.command("list")
def list_oauth_clients() -> None:
    """Registered clients (the built-in web client 'hygie-web' is not listed)."""
    with accounts_session() as accounts:
        items = repo.list_clients(accounts.store.db)
    for item in items:
        client = item.entity
        click.echo(
            f"{client.client_id:<24} {client.kind:<13} {client.status:<10} "
            f"{' '.join(client.scopes)}"
        )


@click.group("tokens", help="Token signing keys and sessions.")
def tokens() -> None:
    """JWT signing keys."""


@tokens.command("rotate-key")
@click.option("--keep", default=3, show_default=True, type=click.IntRange(2, 20))
def rotate_key(keep: int) -> None:
    """Add a new signing key (it signs after the next restart); keep the newest KEEP."""
    from appliance.security.keyring import rotate_jwt_keys

    settings = cli_settings()
    with operator_errors():
        kid, dropped = rotate_jwt_keys(settings, keep=keep)
    click.echo(f"new signing key {kid}")
    for old in dropped:
        click.echo(f"retired key {old}")
    click.echo("restart hygie.service to sign with it (production: re-run install.sh --prod)")
