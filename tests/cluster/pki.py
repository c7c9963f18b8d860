"""Certificates for a local control plane: a CA, the API server's serving certificate, an admin
client certificate and the service-account signing key pair; for clusters with real nodes also
the certificates of the node's components (``issue``).

Called by ``tests.cluster.localcluster`` when it lays out a new cluster directory and by
``tests.cluster.nodes`` for a node's kubelet, kube-proxy, scheduler and DNS. Everything is
written with mode 0600 under the cluster's own ``pki/`` folder; nothing here is used outside
tests and the local demo.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class ClusterPki:
    """Paths of one cluster's PKI files."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public: Path
    sa_private: Path


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    is_ca: bool,
    usage: list[x509.ObjectIdentifier],
    sans: list[x509.GeneralName],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not is_ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def create_cluster_pki(
    directory: Path, *, cluster: str, apiserver_ips: tuple[str, ...] = ()
) -> ClusterPki:
    """Create the PKI of one local cluster in ``directory`` (created if missing).

    ``apiserver_ips`` are extra addresses the API server is reached at (its address on a real
    node's network, the ``kubernetes`` Service address pods use)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = ClusterPki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_public=directory / "sa.pub",
        sa_private=directory / "sa.key",
    )
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kube-qss-{cluster}-ca")])
    ca = _issue(
        subject=ca_name,
        key=ca_key,
        issuer=ca_name,
        issuer_key=ca_key,
        is_ca=True,
        usage=[],
        sans=[],
    )
    _write(pki.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    _write(pki.ca_key, _key_pem(ca_key))

    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = _issue(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        key=serving_key,
        issuer=ca_name,
        issuer_key=ca_key,
        is_ca=False,
        usage=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in apiserver_ips),
        ],
    )
    _write(pki.serving_cert, serving.public_bytes(serialization.Encoding.PEM))
    _write(pki.serving_key, _key_pem(serving_key))

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(
        subject=x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "kube-qss-admin"),
            ]
        ),
        key=admin_key,
        issuer=ca_name,
        issuer_key=ca_key,
        is_ca=False,
        usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
        sans=[],
    )
    _write(pki.admin_cert, admin.public_bytes(serialization.Encoding.PEM))
    _write(pki.admin_key, _key_pem(admin_key))

    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write(pki.sa_private, _key_pem(sa_key))
    _write(
        pki.sa_public,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return pki


def issue(
    pki: ClusterPki,
    stem: Path,
    *,
    common_name: str,
    organizations: tuple[str, ...] = (),
    server: bool = False,
    ips: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """A certificate signed by the cluster CA, written to ``<stem>.crt``/``<stem>.key``.

    A client certificate by default (the API server maps CN to the user and O to groups); with
    ``server`` a serving certificate for ``ips`` and ``dns_names``."""
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    cert = _issue(
        subject=x509.Name(subject),
        key=key,
        issuer=ca.subject,
        issuer_key=ca_key,
        is_ca=False,
        usage=[ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH],
        sans=[
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
            *(x509.DNSName(name) for name in dns_names),
        ],
    )
    crt, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
    _write(crt, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _key_pem(key))
    return crt, key_path
