"""``hygie-sync-server``: the cloud sync service (Litestar, MongoDB through pymongo).

Appliances authenticate with a client certificate issued by the cloud CA; the tenant comes
from that certificate, never from the request. The TLS layer is uvicorn's; a small protocol
subclass (:class:`PeerCertH11Protocol`) hands the verified peer certificate to the app in the
connection's ASGI state, because uvicorn does not implement the ASGI TLS extension.

Routes (all under mutual TLS):

- ``POST /v1/batches``: a :class:`~sync.envelope.Batch` (JSON) with a ``Content-Digest``
  header; answered with an :class:`~sync.envelope.Ack` once stored with write concern
  majority. 400 corrupt, 409 replayed/contradicting (both recorded as incidents), 503 when
  the database is unavailable (the agent retries).
- ``GET /v1/feed?after=N&limit=M``: the tenant's feed items after position N.
- ``GET /v1/health``: liveness.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import threading
from pathlib import Path
from typing import Any, Literal

import click
import httpx
import msgspec
from litestar import Litestar, Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from pydantic import BaseModel, ConfigDict, Field
from pymongo.errors import PyMongoError
from uvicorn.protocols.http.h11_impl import H11Protocol

from sync.envelope import (
    DIGEST_HEADER,
    Ack,
    Batch,
    EnvelopeError,
    Feed,
    b64d,
    check_batch,
)
from sync.server.pki import (
    PkiError,
    issue_appliance,
    issue_server,
    new_ca,
    server_ssl_context,
    tenant_of_der,
)
from sync.server.relay import Relay
from sync.server.storage import CloudStore, Conflict

PEER_CERT_STATE = "hygie_peer_cert_der"
log = logging.getLogger("hygie.sync.server")


class ServerSettings(BaseModel):
    """Settings of the cloud service, from ``HYGIE_SYNC_SERVER_*`` variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mongo_uri: str = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
    database: str = "hygie_sync"
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    cert_file: Path = Path("/etc/hygie-sync/server.pem")
    key_file: Path = Path("/etc/hygie-sync/server.key")
    client_ca_file: Path = Path("/etc/hygie-sync/ca.pem")
    gateway_url: str | None = None
    relay_interval_s: float = Field(default=5.0, gt=0)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    mongo_timeout_ms: int = Field(default=5000, ge=100)
    write_mode: Literal["upsert", "insert"] = "upsert"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServerSettings:
        env = os.environ if environ is None else environ
        prefix = "HYGIE_SYNC_SERVER_"
        return cls.model_validate(
            {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
        )


class PeerCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the verified client certificate in ``scope["state"]``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.app_state = {**self.app_state, PEER_CERT_STATE: der}


def _tenant(request: Request[Any, Any, Any]) -> str:
    der = request.scope.get("state", {}).get(PEER_CERT_STATE)
    if not der:
        raise HTTPException(status_code=401, detail="a client certificate is required")
    try:
        return tenant_of_der(der)
    except (PkiError, ValueError) as exc:
        raise HTTPException(status_code=403, detail=str(exc)) from exc


def _digest_ok(header: str | None, body: bytes) -> bool:
    if not header or not header.startswith("sha-256=:") or not header.endswith(":"):
        return False
    try:
        claimed = b64d(header[len("sha-256=:") : -1], "digest")
    except EnvelopeError:
        return False
    return hmac.compare_digest(claimed, hashlib.sha256(body).digest())


def create_app(store: CloudStore, settings: ServerSettings | None = None) -> Litestar:
    """The cloud app over an opened :class:`CloudStore` (indexes ensured at start)."""
    settings = settings or ServerSettings()

    def refuse(tenant: str, kind: str, status: int, detail: str) -> HTTPException:
        try:
            store.record_incident(tenant, kind, detail)
        except PyMongoError:  # the refusal still stands; the log keeps the trace
            log.exception("cannot record incident for %s", tenant)
        log.warning("refused batch from %s (%s): %s", tenant, kind, detail)
        return HTTPException(status_code=status, detail=f"{kind}: {detail}")

    @post("/v1/batches", status_code=200, sync_to_thread=True)
    def push(request: Request[Any, Any, Any], body: bytes) -> Ack:
        tenant = _tenant(request)
        if not _digest_ok(request.headers.get(DIGEST_HEADER), body):
            raise refuse(tenant, "corrupt", 400, "Content-Digest missing or does not match")
        try:
            batch = msgspec.json.decode(body, type=Batch)
            check_batch(batch, tenant)
        except (msgspec.DecodeError, EnvelopeError) as exc:
            raise refuse(tenant, "corrupt", 400, str(exc)) from exc
        try:
            return store.store_batch(batch)
        except Conflict as exc:
            raise refuse(tenant, "replay", 409, str(exc)) from exc
        except PyMongoError as exc:
            log.warning("database unavailable: %s", exc)
            raise HTTPException(status_code=503, detail="storage unavailable, retry") from exc

    @get("/v1/feed", sync_to_thread=True)
    def feed(
        request: Request[Any, Any, Any],
        after: int = Parameter(default=0, ge=0),
        limit: int = Parameter(default=500, ge=1, le=5000),
    ) -> Feed:
        tenant = _tenant(request)
        try:
            items = store.feed(tenant, after, limit)
        except PyMongoError as exc:
            raise HTTPException(status_code=503, detail="storage unavailable, retry") from exc
        return Feed(
            tenant=tenant, items=items, last_position=items[-1].position if items else after
        )

    @get("/v1/health", sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(
        route_handlers=[push, feed, health],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
    )


def uvicorn_config(app: Any, settings: ServerSettings, **kwargs: Any) -> Any:
    """A loaded uvicorn config serving ``app`` under mutual TLS 1.3."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=PeerCertH11Protocol,
        log_config=None,
        access_log=False,
        server_header=False,
        ssl_certfile=str(settings.cert_file),
        ssl_keyfile=str(settings.key_file),
        ssl_ca_certs=str(settings.client_ca_file),
        **kwargs,
    )
    config.load()
    config.ssl = server_ssl_context(settings.cert_file, settings.key_file, settings.client_ca_file)
    return config


def start_relay_thread(
    store: CloudStore, settings: ServerSettings, stop: threading.Event
) -> threading.Thread | None:
    """Run the teletransmission relay every ``relay_interval_s`` until ``stop`` is set."""
    if not settings.gateway_url:
        return None
    relay = Relay(store, settings.gateway_url, httpx.Client(timeout=30))

    def loop() -> None:
        while not stop.wait(settings.relay_interval_s):
            try:
                relay.run_once()
            except PyMongoError:
                log.exception("relay pass failed; retried next interval")

    thread = threading.Thread(target=loop, name="hygie-relay", daemon=True)
    thread.start()
    return thread


@click.group()
def main() -> None:
    """Hygie cloud sync service (run on the HDS-hosted side, not on the pharmacy box)."""


@main.command()
def serve() -> None:
    """Serve appliances under mutual TLS (settings from HYGIE_SYNC_SERVER_*)."""
    import uvicorn

    settings = ServerSettings.from_env()
    store = CloudStore.connect(
        settings.mongo_uri,
        settings.database,
        timeout_ms=settings.mongo_timeout_ms,
        write_mode=settings.write_mode,
    )
    try:
        store.ensure_indexes()
    except PyMongoError as exc:
        raise click.ClickException(f"MongoDB unreachable at {settings.mongo_uri}: {exc}") from exc
    stop = threading.Event()
    start_relay_thread(store, settings, stop)
    try:
        uvicorn.Server(uvicorn_config(create_app(store, settings), settings)).run()
    finally:
        stop.set()
        store.close()


@main.command("init-ca")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--name", "names", multiple=True, default=["localhost"], show_default=True)
@click.option("--address", "addresses", multiple=True, default=["127.0.0.1"], show_default=True)
def init_ca(directory: Path, names: tuple[str, ...], addresses: tuple[str, ...]) -> None:
    """Create the cloud CA and a server certificate in DIRECTORY (never overwrites)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (directory / "ca.key").exists():
        raise click.ClickException(f"{directory / 'ca.key'} exists; refusing to overwrite")
    ca = new_ca()
    server = issue_server(ca, list(names), list(addresses))
    for name, data in (
        ("ca.key", ca.key_pem),
        ("ca.pem", ca.cert_pem),
        ("server.key", server.key_pem),
        ("server.pem", server.cert_pem),
    ):
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
    click.echo(f"CA and server certificate written to {directory}")


@main.command("issue-appliance")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("tenant")
@click.argument("out", type=click.Path(path_type=Path))
def issue_appliance_command(directory: Path, tenant: str, out: Path) -> None:
    """Issue a client certificate for TENANT with the CA in DIRECTORY, into OUT."""
    from sync.server.pki import Issued

    ca = Issued((directory / "ca.key").read_bytes(), (directory / "ca.pem").read_bytes())
    try:
        issued = issue_appliance(ca, tenant)
    except PkiError as exc:
        raise click.ClickException(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, data in (
        ("sync-client.key", issued.key_pem),
        ("sync-client.pem", issued.cert_pem),
        ("sync-ca.pem", ca.cert_pem),
    ):
        (out / name).write_bytes(data)
        (out / name).chmod(0o600)
    click.echo(f"client certificate for tenant {tenant} written to {out}")


@main.command()
@click.option("--tenant", required=True)
@click.option("--stream", required=True, type=click.Choice(["knowledge", "configuration"]))
@click.option("--kind", required=True)
@click.option("--id", "remote_id", required=True, help="unique id of this item (idempotent)")
@click.argument("payload_file", type=click.File("rb"))
def publish(tenant: str, stream: str, kind: str, remote_id: str, payload_file: Any) -> None:
    """Append a knowledge or configuration item (JSON object) to a tenant's feed."""
    settings = ServerSettings.from_env()
    try:
        payload = msgspec.json.decode(payload_file.read(), type=dict[str, Any])
    except msgspec.DecodeError as exc:
        raise click.ClickException(f"payload is not a JSON object: {exc}") from exc
    store = CloudStore.connect(
        settings.mongo_uri, settings.database, timeout_ms=settings.mongo_timeout_ms
    )
    try:
        position = store.append_feed(tenant, remote_id, stream, kind, payload)
    finally:
        store.close()
    click.echo(f"feed position {position}")


@main.command("gateway-simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8600, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--key-file",
    type=click.Path(path_type=Path),
    required=True,
    help="RSA private key (PEM), created with its .pub.pem when missing",
)
def gateway_simulator(host: str, port: int, key_file: Path) -> None:
    """Run the SIMULATED insurance gateway (demos and tests; not a real endpoint)."""
    import uvicorn
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from sync.server.gateway_simulator import create_gateway_app, new_gateway_key, public_pem

    if key_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise click.ClickException(f"{key_file} is not an RSA private key")
    else:
        key = new_gateway_key()
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        key_file.with_suffix(".pub.pem").write_bytes(public_pem(key))
        click.echo(f"gateway key created; give {key_file.with_suffix('.pub.pem')} to appliances")
    uvicorn.run(create_gateway_app(key), host=host, port=port, log_config=None)


if __name__ == "__main__":  # pragma: no cover - python -m sync.server.app
    main()
