"""A throw-away test CA and CPS holder certificates, made with ``cryptography``.

The virtual CPS must really sign, so it needs a key and a certificate naming a professional
the way the driver reads them (surname, given name, title, ``8`` + RPPS). Everything here is
marked « TEST » in the subject: these certificates prove nothing outside Hygie's tests.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KEY_BITS = 2048


@lru_cache(maxsize=1)
def test_ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HYGIE TEST"),
            x509.NameAttribute(NameOID.COMMON_NAME, "AC TEST HYGIE CARTES VIRTUELLES"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def holder_certificate(
    surname: str, first_name: str, national_id: str, profession: str
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A fresh RSA key and its CPS-like certificate signed by :func:`test_ca`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key, certificate_for(key.public_key(), surname, first_name, national_id, profession)


def certificate_for(
    public_key: rsa.RSAPublicKey, surname: str, first_name: str, national_id: str, profession: str
) -> x509.Certificate:
    """A CPS-like authentication certificate for ``public_key`` (a key generated elsewhere,
    e.g. on a PKCS#11 token), signed by :func:`test_ca`."""
    ca_key, ca = test_ca()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HYGIE TEST - CARTE VIRTUELLE"),
            x509.NameAttribute(NameOID.TITLE, profession),
            x509.NameAttribute(NameOID.SURNAME, surname),
            x509.NameAttribute(NameOID.GIVEN_NAME, first_name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, national_id),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{national_id}/{first_name} {surname}"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3 * 365))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
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
        .sign(ca_key, hashes.SHA256())
    )
    return certificate
