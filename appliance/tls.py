"""HTTPS for the pharmacy LAN: a local certificate authority, a server certificate for the
box's names and addresses, and a TLS 1.3-only server context.

``hygie tls init`` creates the CA (ten years) and a server certificate (397 days at most, as
browsers require) signed by it; ``hygie tls rotate`` issues a new server key and certificate
under the same CA, so counter terminals that trust the CA keep working. The CA certificate is
served at ``/tls/ca.pem`` (and ``/tls/ca.crt``, DER) for terminals to install; its SHA-256
fingerprint, printed by the commands, is what staff compare before trusting it.

The keys live in the key directory (or arrive as systemd credentials) like every secret;
the CA key is needed only by the two commands, never by the running server.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from litestar import Controller, Response, get
from litestar.datastructures import State

from appliance.commands import cli_settings, fail, operator_errors
from appliance.config import Settings
from appliance.keys import SecretError, read_secret, secret_path, write_secret
from appliance.problems import Problem
from appliance.security import PUBLIC

CA_KEY = "tls-ca.key"
CA_CERT = "tls-ca.pem"
SERVER_KEY = "tls-server.key"
SERVER_CERT = "tls-server.pem"
CA_DAYS = 3650
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Issued:
    """What a command created, for the operator."""

    ca_created: bool
    ca_fingerprint: str
    server_names: list[str]
    server_addresses: list[str]
    not_after: dt.datetime


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as browsers show it (``AB:CD:...``)."""
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def _split(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _local_addresses() -> set[IPAddress]:
    found: set[IPAddress] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
    except (OSError, ValueError):
        pass
    # The address of the default route, found without sending anything (UDP connect).
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        found.add(ipaddress.ip_address(probe.getsockname()[0]))
    except OSError:
        pass
    finally:
        probe.close()
    return {address for address in found if not address.is_unspecified}


def lan_identity(settings: Settings) -> tuple[list[str], list[IPAddress]]:
    """DNS names and IP addresses the server certificate must cover."""
    hostname = socket.gethostname()
    names = {"localhost", hostname, f"{hostname}.local"}
    fqdn = socket.getfqdn()
    if "." in fqdn and not fqdn.startswith("localhost"):
        names.add(fqdn)
    addresses: set[IPAddress] = {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    addresses |= _local_addresses()
    extra_hosts = [*_split(settings.tls_names), *_split(settings.tls_addresses), settings.host]
    if settings.public_url:
        extra_hosts.append(urlsplit(settings.public_url).hostname or "")
    for host in extra_hosts:
        if not host or host in ("0.0.0.0", "::"):  # noqa: S104 - wildcard binds, not names
            continue
        try:
            addresses.add(ipaddress.ip_address(host))
        except ValueError:
            names.add(host.lower())
    return sorted(names), sorted(addresses, key=lambda a: (a.version, int(a)))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hygie"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def new_ca(
    now: dt.datetime,
    days: int = CA_DAYS,
    *,
    common_name: str | None = None,
    backdate: dt.timedelta = dt.timedelta(minutes=5),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed P-256 CA; also the cloud sync service's CA (``sync.server.pki``), which
    backdates further so that appliances whose clock runs behind still accept it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name or f"Hygie CA {socket.gethostname()}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def new_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: Iterable[str],
    addresses: Iterable[IPAddress],
    *,
    now: dt.datetime,
    days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    names, addresses = list(names), list(addresses)
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alt += [x509.IPAddress(address) for address in addresses]
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0] if names else "hygie"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_ca(settings: Settings) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    key_path, cert_path = settings.key_path / CA_KEY, settings.key_path / CA_CERT
    if not key_path.exists() and not cert_path.exists():
        return None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SecretError(
            f"the local CA in {settings.key_path} is incomplete or unreadable ({exc})"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SecretError(f"{key_path} is not an EC private key")
    return key, cert


def issue(settings: Settings, *, new_authority: bool = False) -> Issued:
    """Create the CA when missing (or when ``new_authority``) and a fresh server certificate."""
    now = dt.datetime.now(dt.UTC)
    settings.key_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    loaded = None if new_authority else _load_ca(settings)
    created = loaded is None
    if loaded is None:
        loaded = new_ca(now)
        write_secret(settings.key_path / CA_KEY, _key_pem(loaded[0]))
        write_secret(settings.key_path / CA_CERT, _cert_pem(loaded[1]))
    ca_key, ca_cert = loaded
    names, addresses = lan_identity(settings)
    key, cert = new_server_certificate(
        ca_key, ca_cert, names, addresses, now=now, days=settings.tls_cert_days
    )
    write_secret(settings.key_path / SERVER_KEY, _key_pem(key))
    write_secret(settings.key_path / SERVER_CERT, _cert_pem(cert) + _cert_pem(ca_cert))
    return Issued(
        ca_created=created,
        ca_fingerprint=fingerprint(ca_cert),
        server_names=names,
        server_addresses=[str(a) for a in addresses],
        not_after=cert.not_valid_after_utc,
    )


def server_files(settings: Settings) -> tuple[Path, Path]:
    """(certificate chain, key) the server loads; SecretError when ``tls init`` never ran."""
    cert, key = secret_path(settings, SERVER_CERT), secret_path(settings, SERVER_KEY)
    for path, name in ((cert, SERVER_CERT), (key, SERVER_KEY)):
        if not path.exists():
            raise SecretError(f"TLS is enabled but '{name}' is missing: run 'hygie tls init'")
    return cert, key


def restrict_to_tls13(context: ssl.SSLContext) -> ssl.SSLContext:
    """Refuse every protocol below TLS 1.3 (its cipher suites are all AEAD with PFS)."""
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION
    return context


def server_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certfile), str(keyfile))
    return restrict_to_tls13(context)


def uvicorn_config(
    settings: Settings, app: Any, *, host: str, port: int, tls: bool, **kwargs: Any
) -> Any:
    """A loaded uvicorn configuration; with ``tls`` its context accepts TLS 1.3 only."""
    import uvicorn

    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        **kwargs,
    }
    if tls:
        cert, key = server_files(settings)
        options.update(ssl_certfile=str(cert), ssl_keyfile=str(key))
    config = uvicorn.Config(app, **options)
    config.load()
    if tls:
        assert config.ssl is not None
        restrict_to_tls13(config.ssl)
    return config


# --- download of the CA certificate -----------------------------------------------------------


def _ca_certificate(state: State) -> x509.Certificate:
    settings: Settings = state["settings"]
    try:
        return x509.load_pem_x509_certificate(read_secret(settings, CA_CERT))
    except (SecretError, ValueError) as exc:
        raise Problem(404, "no-local-ca", "no local CA yet: run 'hygie tls init'") from exc


class TLSController(Controller):
    """The local CA certificate, for counter terminals to trust the box."""

    path = "/tls"
    tags = ["tls"]
    opt = PUBLIC
    security = [{}]  # OpenAPI: no bearer token needed

    @get("/ca.pem", sync_to_thread=True, media_type="application/x-pem-file")
    def ca_pem(self, state: State) -> Response[bytes]:
        """The CA certificate (PEM). Compare its SHA-256 fingerprint before trusting it."""
        cert = _ca_certificate(state)
        return Response(
            cert.public_bytes(serialization.Encoding.PEM),
            media_type="application/x-pem-file",
            headers={
                "Content-Disposition": 'attachment; filename="hygie-ca.pem"',
                "X-Certificate-SHA256": fingerprint(cert),
            },
        )

    @get("/ca.crt", sync_to_thread=True, media_type="application/x-x509-ca-cert")
    def ca_der(self, state: State) -> Response[bytes]:
        """The CA certificate (DER), which Windows and Android install with a double tap."""
        cert = _ca_certificate(state)
        return Response(
            cert.public_bytes(serialization.Encoding.DER),
            media_type="application/x-x509-ca-cert",
            headers={
                "Content-Disposition": 'attachment; filename="hygie-ca.crt"',
                "X-Certificate-SHA256": fingerprint(cert),
            },
        )


# --- hygie tls ... ----------------------------------------------------------------------------


def _report(issued: Issued) -> None:
    if issued.ca_created:
        click.echo("created a new local CA: counter terminals must (re)install it")
    click.echo(f"CA certificate SHA-256: {issued.ca_fingerprint}")
    if issued.server_names or issued.server_addresses:
        click.echo(f"server certificate for: {', '.join(issued.server_names)}")
        click.echo(f"                   and: {', '.join(issued.server_addresses)}")
    click.echo(f"server certificate valid until {issued.not_after:%Y-%m-%d}")
    click.echo("terminals download the CA at /tls/ca.pem")
    click.echo("restart hygie.service to serve the new certificate")


@click.group("tls")
def tls() -> None:
    """HTTPS: local certificate authority and server certificate."""


@tls.command("init")
def tls_init() -> None:
    """Create the local CA and a server certificate when missing (never replaces them)."""
    settings = cli_settings()
    with operator_errors():
        loaded = _load_ca(settings)
        if loaded is not None and (settings.key_path / SERVER_CERT).exists():
            click.echo(f"TLS already set up in {settings.key_path} (use 'hygie tls rotate')")
            click.echo(f"CA certificate SHA-256: {fingerprint(loaded[1])}")
            return
        _report(issue(settings))


@tls.command("rotate")
@click.option("--new-ca", is_flag=True, help="Also replace the CA (every terminal must re-trust).")
def tls_rotate(new_ca: bool) -> None:
    """Issue a new server key and certificate (same CA unless --new-ca)."""
    settings = cli_settings()
    with operator_errors():
        if not new_ca and _load_ca(settings) is None:
            fail("no local CA yet: run 'hygie tls init' first")
        _report(issue(settings, new_authority=new_ca))
