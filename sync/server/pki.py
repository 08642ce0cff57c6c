"""The cloud's certificate authority: server certificates and appliance client certificates.

Why a tenant URI in the client certificate: the cloud never trusts a tenant named in a
request body; the tenant is what the CA wrote into the certificate the appliance proved it
holds during the TLS handshake (``urn:hygie:tenant:<id>`` subject alternative name).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance import tls

TENANT_URI_PREFIX = "urn:hygie:tenant:"
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


class PkiError(ValueError):
    """A certificate is missing, malformed or does not name a tenant."""


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    cert_pem: bytes


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hygie Cloud"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def new_ca(common_name: str = "Hygie Cloud CA", days: int = 3650) -> Issued:
    """The cloud's CA, made like the appliance's own (``appliance.tls.new_ca``), backdated a
    day for appliances whose clock runs behind."""
    key, cert = tls.new_ca(
        dt.datetime.now(dt.UTC), days, common_name=common_name, backdate=dt.timedelta(days=1)
    )
    return Issued(_key_pem(key), _pem(cert))


def _load_ca(ca: Issued) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the CA key is not an EC key")
    return key, x509.load_pem_x509_certificate(ca.cert_pem)


def _leaf(
    ca: Issued,
    common_name: str,
    alt: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> Issued:
    ca_key, ca_cert = _load_ca(ca)
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A day of slack: an appliance whose clock was set back still completes the handshake.
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(_key_pem(key), _pem(cert) + ca.cert_pem)


def issue_server(ca: Issued, names: list[str], addresses: list[str], days: int = 397) -> Issued:
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    return _leaf(
        ca, names[0] if names else "hygie-sync", alt, ExtendedKeyUsageOID.SERVER_AUTH, days
    )


def issue_appliance(ca: Issued, tenant: str, days: int = 397) -> Issued:
    """A client certificate binding an appliance to ``tenant``."""
    if not TENANT_PATTERN.fullmatch(tenant):
        raise PkiError("tenant ids are 2-63 lowercase letters, digits or dashes")
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(TENANT_URI_PREFIX + tenant)]
    return _leaf(ca, tenant, alt, ExtendedKeyUsageOID.CLIENT_AUTH, days)


def tenant_of(cert: x509.Certificate) -> str:
    """The tenant a (verified) client certificate was issued for."""
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise PkiError("the client certificate names no tenant") from exc
    for uri in alt.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(TENANT_URI_PREFIX):
            tenant = uri[len(TENANT_URI_PREFIX) :]
            if TENANT_PATTERN.fullmatch(tenant):
                return tenant
    raise PkiError("the client certificate names no tenant")


def tenant_of_der(der: bytes) -> str:
    return tenant_of(x509.load_der_x509_certificate(der))


def tenant_of_pem_file(path: Path) -> str:
    return tenant_of(x509.load_pem_x509_certificate(path.read_bytes()))


def server_ssl_context(cert_file: Path, key_file: Path, client_ca_file: Path) -> ssl.SSLContext:
    """TLS 1.3 only, client certificate required and checked against the cloud CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION
    context.load_cert_chain(str(cert_file), str(key_file))
    context.load_verify_locations(cafile=str(client_ca_file))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(cert_file: Path, key_file: Path, server_ca_file: Path) -> ssl.SSLContext:
    """The appliance side: verify the cloud against its CA and present the client cert."""
    context = ssl.create_default_context(cafile=str(server_ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(str(cert_file), str(key_file))
    return context
