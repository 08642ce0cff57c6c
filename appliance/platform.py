"""The opened platform: settings, the encrypted domain store, the audit log, token keys.

Opened once per process (server, worker, CLI). Opening fails loudly with the reason (missing
key, wrong key, missing database) instead of creating or damaging anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from appliance.audit import AuditLog, open_audit_log
from appliance.config import Settings
from appliance.keys import JWT_SIGNING_KEYS, SecretError, derive_key, load_master_key, read_secret
from appliance.security import TokenService
from appliance.store import Migration, Store, pending_migrations

DOMAIN_DB_PURPOSE = "domain-db"
AUDIT_DB_PURPOSE = "audit-db"


@dataclass
class Platform:
    settings: Settings
    store: Store
    audit: AuditLog
    tokens: TokenService | None
    """Present in the server; the worker runs without the token signing keys (least privilege)."""

    def close(self) -> None:
        self.store.close()
        self.audit.store.close()


def domain_key(master_key: bytes) -> bytes:
    return derive_key(master_key, DOMAIN_DB_PURPOSE)


def audit_key(master_key: bytes) -> bytes:
    return derive_key(master_key, AUDIT_DB_PURPOSE)


def load_token_service(settings: Settings) -> TokenService:
    try:
        return TokenService.from_jwks_json(
            read_secret(settings, JWT_SIGNING_KEYS), issuer=settings.issuer_url
        )
    except ValueError as exc:
        raise SecretError(str(exc)) from exc


def open_platform(settings: Settings, *, with_tokens: bool = True) -> Platform:
    """Open every encrypted resource of the appliance (raises SecretError or StoreError)."""
    master = load_master_key(settings)
    store = Store.open(
        settings.domain_db_path, domain_key(master), busy_timeout_ms=settings.busy_timeout_ms
    )
    try:
        audit = open_audit_log(settings, master)
        tokens = load_token_service(settings) if with_tokens else None
    except BaseException:
        store.close()
        raise
    return Platform(settings=settings, store=store, audit=audit, tokens=tokens)


def schema_is_current(platform: Platform, migrations: Sequence[Migration]) -> list[str]:
    """Names of pending domain migrations (empty when the schema is up to date)."""
    return [
        f"{m.component} {m.version} ({m.name})"
        for m in pending_migrations(platform.store, migrations)
    ]
