"""How kube-qss builds X.509 certificates, the one way every component makes them: EC P-256
keys, SHA-256 signatures, a CA that signs leaves directly (path length 0), and leaves that carry
exactly the SANs and extended key usages their caller names.

Pure functions over explicit times. Called by ``controllers.pki`` (the node's CA, node and SAE
certificates) and by ``webhooks.tls`` (the webhook's own CA and serving certificate); those two
may not import each other, so what they share lives here. Private keys are returned as objects
or PEM and never appear in a message raised here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Key = ec.EllipticCurvePrivateKey


class CertificateError(ValueError):
    """A certificate or key is not what it must be; the message says what and what to do."""


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> Key:
    """An EC private key from unencrypted PEM. The error never quotes the input."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError("not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the private key is not an EC key; kube-qss uses EC P-256")
    return key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    *, subject: x509.Name, key: Key, not_before: dt.datetime, not_after: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def create_ca(
    common_name: str, *, not_before: dt.datetime, not_after: dt.datetime
) -> tuple[x509.Certificate, Key]:
    """A new self-signed CA called ``common_name`` with a fresh key: its certificate and key."""
    key = new_key()
    cert = (
        _builder(subject=_name(common_name), key=key, not_before=not_before, not_after=not_after)
        .issuer_name(_name(common_name))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_leaf(
    ca_cert: x509.Certificate,
    ca_key: Key,
    *,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    usages: Sequence[x509.ObjectIdentifier],
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> tuple[x509.Certificate, Key]:
    """A leaf certificate with a fresh key, signed by the CA: its certificate and key."""
    key = new_key()
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        _builder(subject=_name(common_name), key=key, not_before=not_before, not_after=not_after)
        .issuer_name(ca_cert.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key
