"""Typed settings from ``HYGIE_*`` environment variables and an optional TOML file.

Environment variables win over the TOML file so that systemd units and tests can override one
key without rewriting the file. Any invalid value stops start-up with a message that names the
key, the place it came from and the reason: a pharmacy box must not start half-configured.
"""

from __future__ import annotations

import os
import socket
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "HYGIE_"
PROD_CONFIG_FILE = Path("/etc/hygie/hygie.toml")
DEV_CONFIG_FILE = Path("var/hygie.toml")


class Environment(StrEnum):
    DEV = "dev"
    PROD = "prod"


class ConfigError(Exception):
    """Raised when configuration cannot be loaded; the message is meant for an operator."""


class Settings(BaseModel):
    """Every tunable of the appliance, with production-safe defaults.

    Paths left unset are derived from ``env`` in :func:`load_settings` so that a dev checkout
    keeps everything under ``./var`` and production uses the FHS locations.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    env: Environment = Environment.DEV
    config_file: Path | None = None
    data_dir: Path | None = None
    key_dir: Path | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=512 * 1024 * 1024)

    min_free_disk_mb: int = Field(default=512, ge=0)
    heartbeat_max_age_s: int = Field(default=180, ge=5, le=86_400)
    busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)

    audit_checkpoint_every: int = Field(default=100, ge=1, le=100_000)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True

    tracing_enabled: bool = False
    otlp_endpoint: str | None = None
    otlp_headers: str | None = None
    service_name: str = "hygie"

    retry_attempts: int = Field(default=5, ge=1, le=50)
    retry_initial_wait_s: float = Field(default=0.5, gt=0, le=60)
    retry_max_wait_s: float = Field(default=30.0, gt=0, le=3600)
    breaker_threshold: int = Field(default=5, ge=1, le=1000)
    breaker_ttl_s: float = Field(default=30.0, gt=0, le=3600)

    worker_threads: int = Field(default=2, ge=1, le=32)
    embedded_worker: bool | None = None
    """Run the task worker as a child of ``hygie serve``; defaults to on in dev, off in prod."""

    # Identity and access (services/identity, appliance/security, appliance/tls).
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+/?$")
    """Base URL the counter terminals use (the OpenID Connect issuer), e.g.
    ``https://hygie.local:8000``; derived from host, port and TLS when unset."""
    timezone: str = "Europe/Paris"
    """Time zone of the pharmacy: the PIN quick switch is valid until local midnight."""
    tls_enabled: bool | None = None
    """Serve HTTPS, TLS 1.3 only; defaults to on in prod, off in dev."""
    tls_names: str = ""
    """Extra DNS names for the server certificate, comma-separated."""
    tls_addresses: str = ""
    """Extra IP addresses for the server certificate, comma-separated."""
    tls_cert_days: int = Field(default=397, ge=1, le=825)
    access_token_ttl_s: int = Field(default=300, ge=30, le=3600)
    refresh_token_idle_ttl_s: int = Field(default=1800, ge=60, le=86_400)
    refresh_token_max_ttl_s: int = Field(default=43_200, ge=300, le=604_800)
    auth_code_ttl_s: int = Field(default=60, ge=5, le=600)
    login_request_ttl_s: int = Field(default=600, ge=30, le=3600)
    password_min_length: int = Field(default=12, ge=8, le=64)
    argon2_time_cost: int = Field(default=3, ge=1, le=10)
    argon2_memory_kib: int = Field(default=65_536, ge=1024, le=1_048_576)
    argon2_parallelism: int = Field(default=4, ge=1, le=16)
    lockout_threshold: int = Field(default=5, ge=1, le=100)
    """Failed logins of one account before it is locked (the delay then doubles each time)."""
    lockout_address_threshold: int = Field(default=20, ge=1, le=10_000)
    """Failed logins from one client address before that address is locked."""
    lockout_base_delay_s: float = Field(default=30.0, gt=0, le=3600)
    lockout_max_delay_s: float = Field(default=900.0, gt=0, le=86_400)
    lockout_reset_after_s: float = Field(default=3600.0, gt=0, le=604_800)
    """Failures older than this (since the last one) are forgotten."""
    pin_max_failures: int = Field(default=3, ge=1, le=10)
    rate_limit_enabled: bool = True
    rate_limit_window_s: float = Field(default=60.0, gt=0, le=3600)
    rate_limit_per_client: int = Field(default=1200, ge=1)
    """Requests per window and client address, on every route but the probes."""
    rate_limit_auth_per_client: int = Field(default=30, ge=1)
    """Requests per window and client address on the login and token endpoints."""
    federation_issuer: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """External OpenID provider (e.g. Pro Santé Connect); its client secret is the secret
    ``oidc-federation-client-secret``."""
    federation_client_id: str | None = None
    federation_name: str = "Pro Santé Connect"
    federation_scopes: str = "openid"
    federation_claim: str = "SubjectNameID"
    """ID-token claim naming the local user (PSC: ``SubjectNameID``, ``8`` + RPPS)."""
    federation_match: Literal["rpps", "username"] = "rpps"
    web_client_redirect_uris: str = ""
    """Extra redirect URIs of the built-in web client ``hygie-web``, comma-separated."""

    # Local LLMs (models/, services/llm).
    llm_models_dir: Path | None = None
    """Model manifests (``hygie models add``); defaults to ``<data_dir>/models``."""
    llm_cache_size: int = Field(default=3, ge=1, le=16)
    """Models kept loaded at once (least recently used unloaded first)."""
    llm_memory_budget_mb: int = Field(default=8192, ge=64, le=1_048_576)
    """Memory the loaded models may take together (GPU or CPU), estimated from the weights."""
    llm_cascade: str = "BioMistral-7B,MedFound-Llama3-8B,HippoMistral"
    """Models in priority order (draft, critique, verify; ensemble tie-break order)."""
    llm_threads: int = Field(default=0, ge=0, le=256)
    """CPU threads per loaded model; 0: half the cores (at least 1). Oversubscribed cores
    make llama.cpp's spinning threads collapse (30× slower measured on 2 busy cores)."""
    llm_retries: int = Field(default=1, ge=0, le=3)
    """Retries of a model whose answer failed validation (with the failed checks in the
    prompt), before the fallback."""
    llm_remote_enabled: bool = False
    """Fall back to a remote OpenAI-compatible endpoint (pseudonymised data only)."""
    llm_remote_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    llm_remote_model: str = "remote"
    llm_remote_timeout_s: float = Field(default=30.0, gt=0, le=600)

    # SESAM-Vitale teleservices and billing (services/sesam_vitale, services/billing).
    sesam_adri_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """ADRi rights teleservice; unset: rights checks are queued and the record unchecked."""
    sesam_insi_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """INSi identity teleservice; unset: identity checks are queued."""
    sesam_transmission_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """Direct teletransmission endpoint (the local simulator in demos; production lots
    leave through the sync outbox)."""
    sesam_timeout_s: float = Field(default=10.0, gt=0, le=120)
    billing_siren: str | None = Field(default=None, pattern=r"^[0-9]{9}$")
    """SIREN of the pharmacy's company (names the FEC file)."""
    billing_tariff_file: Path | None = None
    """Site tariff (TOML, schema of services/sesam_vitale/data/pharmacist_acts.toml): the
    official codes and amounts the shipped data could not confirm."""

    # Prescription import (services/document_import).
    import_folder: Path | None = None
    """Watched folder: scans, PDFs, CSV exports and FHIR bundles dropped there become
    drafts (FHIR through its service); unset: no folder is watched."""
    import_folder_every_min: int = Field(default=1, ge=1, le=60)

    # Card readers: Vitale and CPS through pcscd (drivers/cps_vitale, services/cards).
    cards_reader: str | None = Field(default=None, max_length=200)
    """Reader to read by default; unset: the first reader holding a card."""
    cards_read_timeout_s: float = Field(default=10.0, ge=0, le=300)
    """How long ``hygie cards read`` waits for a card by default."""
    cards_exchange_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """Longest a whole card dialogue may take once the card is in."""
    cards_cps_login: bool = False
    """Offer « Se connecter avec la carte CPS » on the login page (card + PIN)."""
    cards_cps_aid: str = Field(
        default="E828BD080F8025000001FF0010", pattern=r"^([0-9A-F]{2}){5,16}$"
    )
    cards_cps_cert_fid: str = Field(default="D001", pattern=r"^[0-9A-F]{4}$")
    """File id of the CPS authentication certificate (the virtual CPS's by default)."""
    cards_cps_pin_reference: int = Field(default=0x81, ge=0, le=255)
    cards_pkcs11_module: Path | None = None
    """ANS Cryptolib CPS PKCS#11 module; set: CPS PIN and signature go through it."""
    cards_vpcd_port: int = Field(default=35963, ge=1, le=65535)
    """TCP port of the virtual reader (vsmartcard-vpcd) for ``hygie cards simulate``."""
    cards_virtual_readers: bool | None = None
    """Use the vpcd virtual readers (« Virtual PCD »); defaults to on in dev, off in prod,
    where a local process could otherwise insert a forged card."""
    cards_cps_trust_roots: Path | None = None
    """PEM bundle of the CA certificates a CPS certificate must be issued by (IGC-Santé) for
    the CPS login; required in prod, optional in dev (virtual cards)."""

    # Pharmacy identity printed on documents, and the document signer (services/documents).
    pharmacy_name: str = Field(default="Pharmacie", min_length=1, max_length=120, pattern=r"\S")
    pharmacy_address: str = Field(default="", max_length=400)
    """Postal address; lines separated by ``|`` (or a newline in the TOML file)."""
    pharmacy_phone: str | None = Field(default=None, pattern=r"^\+?[0-9 .()-]{6,24}$")
    pharmacy_finess: str | None = Field(default=None, pattern=r"^(?:[0-9]{2}|2A|2B)[0-9]{7}$")
    """FINESS number of the pharmacy (9 characters; 2A/2B for Corsica)."""
    pharmacy_logo: Path | None = None
    """PNG or JPEG printed in the documents' header."""
    documents_signer: Literal["auto", "pkcs11", "pkcs12", "card"] = "auto"
    """Who signs documents: ``auto`` is PKCS#11 when its module is set, else the PKCS#12
    file; ``card`` is the CPS through the cards service (cards_* settings)."""
    documents_pkcs11_module: Path | None = None
    """PKCS#11 module of the ANS Cryptolib CPS: set, documents are signed with the CPS card."""
    documents_pkcs11_token_label: str | None = Field(default=None, min_length=1, max_length=32)
    documents_pkcs11_key_label: str | None = Field(default=None, min_length=1, max_length=64)
    documents_pkcs11_cert_label: str | None = Field(default=None, min_length=1, max_length=64)
    documents_signing_pkcs12: Path | None = None
    """PKCS#12 signing key and certificate (passphrase: secret documents-signing-passphrase),
    used when no PKCS#11 module is set."""
    documents_trust_roots: Path | None = None
    """PEM trust roots for signature verification (the IGC-Santé roots in production)."""

    @field_validator("pharmacy_logo")
    @classmethod
    def _logo_is_an_image(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise ValueError("the logo must be a .png, .jpg or .jpeg file")
        return value

    # Cloud sync (sync/) and backups (appliance/backup).
    sync_url: str | None = Field(default=None, pattern=r"^https://[^\s?#]+$")
    """Base URL of the cloud sync service (mutual TLS); sync is off while unset."""
    sync_batch_size: int = Field(default=500, ge=1, le=5000)
    sync_timeout_s: float = Field(default=30.0, gt=0, le=600)
    backup_dir: Path | None = None
    """Where ``hygie backup create`` and the daily backup write; ``<data_dir>/backups``."""
    backup_retention: int = Field(default=14, ge=1, le=3650)
    """Scheduled backups kept (the oldest beyond this count are deleted)."""
    backup_hour: int = Field(default=2, ge=0, le=23)
    """Hour (pharmacy time zone) of the daily backup; it needs the secret ``backup.key``."""
    backup_kdf_log2_n: int = Field(default=17, ge=10, le=22)
    """scrypt cost of passphrase-protected backups (2^17: 128 MiB, the OWASP minimum)."""
    documents_dir: Path | None = None
    """Folder of generated and signed documents saved in backups; ``<data_dir>/documents``."""

    @property
    def uses_virtual_card_readers(self) -> bool:
        if self.cards_virtual_readers is None:
            return self.env is Environment.DEV
        return self.cards_virtual_readers

    @property
    def runs_embedded_worker(self) -> bool:
        if self.embedded_worker is None:
            return self.env is Environment.DEV
        return self.embedded_worker

    @property
    def serves_tls(self) -> bool:
        return self.env is Environment.PROD if self.tls_enabled is None else self.tls_enabled

    @property
    def issuer_url(self) -> str:
        """The OpenID Connect issuer: ``public_url``, else built from host, port and TLS."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind is not a name
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.serves_tls else 'http'}://{host}:{self.port}"

    @property
    def data_path(self) -> Path:
        assert self.data_dir is not None, "load_settings() always sets data_dir"
        return self.data_dir

    @property
    def key_path(self) -> Path:
        assert self.key_dir is not None, "load_settings() always sets key_dir"
        return self.key_dir

    @property
    def llm_models_path(self) -> Path:
        return self.llm_models_dir or self.data_path / "models"

    @property
    def backup_path(self) -> Path:
        return self.backup_dir or self.data_path / "backups"

    @property
    def documents_path(self) -> Path:
        return self.documents_dir or self.data_path / "documents"

    @property
    def domain_db_path(self) -> Path:
        return self.data_path / "hygie.db"

    @property
    def audit_db_path(self) -> Path:
        return self.data_path / "audit.db"

    @property
    def queue_db_path(self) -> Path:
        return self.data_path / "queue.db"


def _default_paths(env: Environment) -> dict[str, Path]:
    if env is Environment.PROD:
        return {"data_dir": Path("/var/lib/hygie"), "key_dir": Path("/etc/hygie/credentials")}
    return {"data_dir": Path("var"), "key_dir": Path("var/keys")}


def _config_file_path(environ: dict[str, str]) -> tuple[Path, bool]:
    """Return the TOML path to read and whether the operator named it explicitly."""
    explicit = environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    if explicit:
        return Path(explicit), True
    env = environ.get(f"{ENV_PREFIX}ENV", Environment.DEV.value)
    return (PROD_CONFIG_FILE if env == Environment.PROD.value else DEV_CONFIG_FILE), False


def _read_toml(path: Path, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ConfigError(f"invalid configuration: config_file: {path} does not exist")
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid configuration: {path}: not valid TOML ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"invalid configuration: {path}: cannot be read ({exc})") from exc


def _describe(exc: ValidationError, from_file: set[str], path: Path) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        top = str(error["loc"][0]) if error["loc"] else ""
        origin = f"{path} key '{key}'" if top in from_file else f"{ENV_PREFIX}{key.upper()}"
        reason = error["msg"]
        if error["type"] == "extra_forbidden":
            reason = "unknown setting"
        lines.append(f"  {key} ({origin}): {reason}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from the TOML file (if any) overlaid with ``HYGIE_*`` variables."""
    environ = dict(os.environ if environ is None else environ)
    path, required = _config_file_path(environ)
    file_values = _read_toml(path, required)
    env_values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX)
    }
    from_file = set(file_values) - set(env_values)
    try:
        settings = Settings.model_validate({**file_values, **env_values})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, from_file, path)) from exc
    defaults = _default_paths(settings.env)
    updates: dict[str, Any] = {"config_file": path if path.exists() else None}
    for name, default in defaults.items():
        if getattr(settings, name) is None:
            updates[name] = default
    return settings.model_copy(update=updates)


SECRET_SETTING_NAMES: frozenset[str] = frozenset({"otlp_headers"})


def settings_for_display(settings: Settings) -> dict[str, Any]:
    """Settings as shown by ``hygie config show``: secrets masked, paths as strings."""
    shown: dict[str, Any] = {}
    for key, value in settings.model_dump(mode="json").items():
        shown[key] = "********" if key in SECRET_SETTING_NAMES and value else value
    return shown
