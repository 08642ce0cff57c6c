"""TLS: the local CA and server certificate, the CA download, and a real server on loopback
that negotiates TLS 1.3 and refuses a TLS 1.2 client."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.cli import main
from appliance.config import Settings
from appliance.tls import CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, fingerprint, uvicorn_config


def _init(settings: Settings, *args: str) -> Any:
    result = CliRunner().invoke(main, ["tls", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _cert(settings: Settings, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((settings.key_path / name).read_bytes())


def test_init_creates_a_ca_and_a_server_certificate(settings: Settings) -> None:
    result = _init(settings, "init")
    ca = _cert(settings, CA_CERT)
    assert f"CA certificate SHA-256: {fingerprint(ca)}" in result.output
    for name in (CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT):
        mode = stat.S_IMODE((settings.key_path / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    server = _cert(settings, SERVER_CERT)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = san.get_values_for_type(x509.DNSName)
    addresses = san.get_values_for_type(x509.IPAddress)
    assert {"localhost", socket.gethostname()} <= set(names)
    assert ipaddress.ip_address("127.0.0.1") in addresses
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=398)
    assert "already" in _init(settings, "init").output
    assert _cert(settings, SERVER_CERT).serial_number == server.serial_number


def test_extra_names_and_addresses_are_covered(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYGIE_TLS_NAMES", "hygie.pharmacie.lan, comptoir")
    monkeypatch.setenv("HYGIE_TLS_ADDRESSES", "192.168.1.20")
    _init(settings, "init")
    san = _cert(settings, SERVER_CERT).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert {"hygie.pharmacie.lan", "comptoir"} <= set(san.value.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("192.168.1.20") in san.value.get_values_for_type(x509.IPAddress)


def test_rotate_keeps_the_ca_unless_asked(settings: Settings) -> None:
    rotate_first = CliRunner().invoke(main, ["tls", "rotate"])
    assert rotate_first.exit_code == 1
    assert "tls init" in rotate_first.output
    _init(settings, "init")
    ca, server = _cert(settings, CA_CERT), _cert(settings, SERVER_CERT)
    old_key = (settings.key_path / SERVER_KEY).read_bytes()
    _init(settings, "rotate")
    assert _cert(settings, CA_CERT) == ca
    assert _cert(settings, SERVER_CERT).serial_number != server.serial_number
    assert (settings.key_path / SERVER_KEY).read_bytes() != old_key
    _cert(settings, SERVER_CERT).verify_directly_issued_by(ca)
    output = _init(settings, "rotate", "--new-ca").output
    assert "new local CA" in output
    assert _cert(settings, CA_CERT) != ca


def test_ca_certificate_download(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        missing = client.get("/tls/ca.pem")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        _init(settings, "init")
        pem = client.get("/tls/ca.pem")
        der = client.get("/tls/ca.crt")
    assert pem.status_code == 200
    ca = _cert(settings, CA_CERT)
    assert x509.load_pem_x509_certificate(pem.content) == ca
    assert x509.load_der_x509_certificate(der.content) == ca
    assert pem.headers["x-certificate-sha256"] == fingerprint(ca)
    assert b"PRIVATE" not in pem.content


def test_serve_refuses_tls_without_certificates(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["serve", "--tls", "--port", "1"])
    assert result.exit_code == 4
    assert "hygie tls init" in result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def tls_server(settings: Settings) -> Iterator[int]:
    import uvicorn

    _init(settings, "init")
    port = _free_port()
    config = uvicorn_config(settings, create_app(settings), host="127.0.0.1", port=port, tls=True)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the TLS server did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _client_context(settings: Settings, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.key_path / CA_CERT))
    for name, version in versions.items():
        setattr(context, name, version)
    return context


def test_real_client_negotiates_tls13_and_tls12_is_refused(
    settings: Settings, tls_server: int
) -> None:
    context = _client_context(settings)
    with socket.create_connection(("127.0.0.1", tls_server), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.3"
            assert tls.cipher()[1] == "TLSv1.3"

    https = http.client.HTTPSConnection("127.0.0.1", tls_server, context=context, timeout=5)
    https.request("GET", "/tls/ca.pem")
    answer = https.getresponse()
    assert answer.status == 200
    assert x509.load_pem_x509_certificate(answer.read()) == _cert(settings, CA_CERT)
    https.close()

    old = _client_context(settings, maximum_version=ssl.TLSVersion.TLSv1_2)
    with socket.create_connection(("127.0.0.1", tls_server), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="localhost")


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_server: int) -> None:
    context = ssl.create_default_context()  # system CAs only
    with socket.create_connection(("127.0.0.1", tls_server), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="localhost")
