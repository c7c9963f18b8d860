"""The node's PKI as pure functions: a CA, node certificates, SAE client certificates, and the
checks that read a node ID or an SAE ID back out of a peer's certificate.

Called by ``controllers.identity`` (the node's CA and certificate, created on first start), by the
inter-node channel (``controllers.channel``: which node is on the other end of a connection), and
by the Sae reconciler and the ETSI 014 server (an SAE's credentials; which SAE is calling).

Every certificate is EC P-256 signed with SHA-256, built by ``qss_api.certificates`` (which the
webhook's TLS shares). A node certificate names its node three ways
(CN, a DNS SAN and the URI SAN ``spiffe://qss.dev/node/<node ID>``) and may serve and connect
(EKU serverAuth + clientAuth); an SAE certificate carries ``spiffe://qss.dev/sae/<SAE ID>`` and
may only connect (EKU clientAuth). The URI SAN is what tells the two apart, so an SAE whose ID
happens to equal a node ID still cannot act as that node, and a node cannot act as an SAE.

Private keys stay in ``Credentials.key_pem``, which is left out of ``repr``; no message raised
here quotes key material.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from qss_api import NODE_ID_PATTERN
from qss_api.certificates import CertificateError as CertificateError
from qss_api.certificates import cert_pem as cert_pem
from qss_api.certificates import create_ca as _create_ca
from qss_api.certificates import issue_leaf
from qss_api.certificates import key_pem as key_pem
from qss_api.certificates import load_private_key as load_private_key

SPIFFE_TRUST_DOMAIN: Final = "qss.dev"
NODE_URI_PREFIX: Final = f"spiffe://{SPIFFE_TRUST_DOMAIN}/node/"
SAE_URI_PREFIX: Final = f"spiffe://{SPIFFE_TRUST_DOMAIN}/sae/"

# A CA outlives the certificates it signs; ten years keeps a node from having to re-key its
# peers' trust often, and the node certificate (one year) is what gets renewed.
CA_VALIDITY: Final = dt.timedelta(days=3650)
NODE_VALIDITY: Final = dt.timedelta(days=365)
SAE_VALIDITY: Final = dt.timedelta(days=365)
# Tolerate small clock differences between the issuing node and its peers.
_BACKDATE: Final = dt.timedelta(minutes=5)

_DNS_LABEL = re.compile(NODE_ID_PATTERN)
_MAX_CN: Final = 64  # RFC 5280 ub-common-name


class NotANodeCertificate(CertificateError):
    """The certificate does not identify a QSS node."""


class NotAnSaeCertificate(CertificateError):
    """The certificate does not identify an SAE."""


class UntrustedCertificate(CertificateError):
    """The certificate does not chain to the trusted CA (or is expired, or has the wrong use)."""


@dataclass(frozen=True)
class Credentials:
    """A certificate (PEM, possibly followed by its intermediates) and its private key (PEM)."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        return load_certificate(self.cert_pem)

    def __repr__(self) -> str:
        try:
            subject = self.certificate.subject.rfc4514_string()
        except CertificateError:
            return "Credentials(<not a certificate>)"
        return f"Credentials(subject={subject!r})"


# --- PEM helpers ---------------------------------------------------------------------------


def load_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """The first certificate of PEM or DER ``data`` (or ``data`` itself if already parsed)."""
    if isinstance(data, x509.Certificate):
        return data
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateError("not a PEM or DER X.509 certificate") from None


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; at least one."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertificateError("not a PEM bundle of X.509 certificates") from None
    return certs


def fingerprint(cert: bytes | x509.Certificate) -> str:
    """SHA-256 fingerprint (hex) of a certificate, for logs and messages."""
    return load_certificate(cert).fingerprint(hashes.SHA256()).hex()


def key_matches(cert: bytes | x509.Certificate, key_pem_: bytes) -> bool:
    """Whether the private key belongs to the certificate's public key."""
    public = load_certificate(cert).public_key()
    return bool(load_private_key(key_pem_).public_key() == public)


def load_cert_chain_pem(context: ssl.SSLContext, cert_pem_: bytes, key_pem_: bytes) -> None:
    """``context.load_cert_chain`` from PEM in memory.

    Python's ssl module only loads keys from files, so the key goes through an anonymous memory
    file (Linux ``memfd``) that never touches a disk, or else a private temporary directory that
    is removed at once.
    """
    if hasattr(os, "memfd_create"):
        fds = []
        try:
            for name, data in (("cert", cert_pem_), ("key", key_pem_)):
                fd = os.memfd_create(f"qss-{name}", os.MFD_CLOEXEC)
                fds.append(fd)
                os.write(fd, data)
            context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="qss-tls-") as tmp:  # pragma: no cover - non-Linux
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        for path, data in ((cert_path, cert_pem_), (key_path, key_pem_)):
            path.touch(mode=0o600)
            path.write_bytes(data)
        context.load_cert_chain(cert_path, key_path)


# --- issuing -------------------------------------------------------------------------------


def _validity(validity: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - _BACKDATE, now + validity


def create_ca(name: str, *, validity: dt.timedelta = CA_VALIDITY) -> Credentials:
    """A new self-signed CA called ``name`` (its CN) with a fresh P-256 key."""
    if not 0 < len(name) <= _MAX_CN:
        raise CertificateError(f"CA name must be 1 to {_MAX_CN} characters, got {len(name)}")
    not_before, not_after = _validity(validity)
    cert, key = _create_ca(name, not_before=not_before, not_after=not_after)
    return Credentials(cert_pem=cert_pem(cert), key_pem=key_pem(key))


def _issue_leaf(
    ca: Credentials,
    *,
    common_name: str,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    validity: dt.timedelta,
) -> Credentials:
    not_before, not_after = _validity(validity)
    cert, key = issue_leaf(
        ca.certificate,
        load_private_key(ca.key_pem),
        common_name=common_name,
        sans=sans,
        usages=usages,
        not_before=not_before,
        not_after=not_after,
    )
    return Credentials(cert_pem=cert_pem(cert), key_pem=key_pem(key))


def check_node_id(node_id: str) -> None:
    """Raise unless ``node_id`` is a DNS label (the form QKDLink.spec.peerNodeID takes)."""
    if not _DNS_LABEL.match(node_id):
        raise CertificateError(
            f"node ID {node_id!r} is not a DNS label (lowercase letters, digits and '-', "
            "at most 63 characters)"
        )


def check_sae_id(sae_id: str) -> None:
    """Raise unless ``sae_id`` fits a certificate's CN: 1 to 64 printable characters."""
    if not 0 < len(sae_id) <= _MAX_CN or not sae_id.isprintable():
        raise CertificateError(
            f"SAE ID {sae_id!r} must be 1 to {_MAX_CN} printable characters to fit a certificate"
        )


def issue_node_certificate(
    ca: Credentials,
    node_id: str,
    *,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    validity: dt.timedelta = NODE_VALIDITY,
) -> Credentials:
    """A node certificate for ``node_id``, signed by ``ca``, to serve and to connect with.

    The node ID is the CN, the first DNS SAN (peers check the server's hostname against it) and
    the node URI SAN; ``dns_names`` and ``ip_addresses`` are where clients reach the node.
    """
    check_node_id(node_id)
    sans: list[x509.GeneralName] = [x509.DNSName(node_id)]
    sans += [x509.DNSName(n) for n in dns_names if n != node_id]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    sans.append(x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id))
    return _issue_leaf(
        ca,
        common_name=node_id,
        sans=sans,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        validity=validity,
    )


def sae_uri(sae_id: str) -> str:
    """The URI SAN naming an SAE (the ID percent-encoded, so any printable ID fits)."""
    return SAE_URI_PREFIX + quote(sae_id, safe="")


def issue_sae_certificate(
    ca: Credentials, sae_id: str, *, validity: dt.timedelta = SAE_VALIDITY
) -> Credentials:
    """A client certificate for the SAE ``sae_id``, signed by ``ca`` (EKU clientAuth only)."""
    check_sae_id(sae_id)
    return _issue_leaf(
        ca,
        common_name=sae_id,
        sans=[x509.UniformResourceIdentifier(sae_uri(sae_id))],
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        validity=validity,
    )


# --- reading identities back ---------------------------------------------------------------


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]


def _usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None


def _describe(cert: x509.Certificate) -> str:
    return f"certificate {cert.subject.rfc4514_string()!r}"


def node_id_of(cert: bytes | x509.Certificate) -> str:
    """The node ID a node certificate (PEM, DER or parsed) names.

    It must carry exactly one node URI SAN, the same ID as CN and as a DNS SAN, no SAE URI, and
    EKU serverAuth + clientAuth; anything else is not a node certificate.
    """
    c = load_certificate(cert)
    what = _describe(c)
    nodes = [u.removeprefix(NODE_URI_PREFIX) for u in _uris(c) if u.startswith(NODE_URI_PREFIX)]
    if len(nodes) != 1:
        raise NotANodeCertificate(
            f"{what} is not a QSS node certificate: it needs exactly one URI SAN "
            f"{NODE_URI_PREFIX}<node ID>, found {len(nodes)}"
        )
    node_id = nodes[0]
    if any(u.startswith(SAE_URI_PREFIX) for u in _uris(c)):
        raise NotANodeCertificate(f"{what} names an SAE; an SAE certificate cannot act as a node")
    if _common_name(c) != node_id or node_id not in _dns_names(c):
        raise NotANodeCertificate(
            f"{what} is not a consistent node certificate: CN and a DNS SAN must both be the "
            f"node ID {node_id!r} of its URI SAN"
        )
    needed = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    if not needed <= _usages(c):
        raise NotANodeCertificate(
            f"{what} lacks extended key usage serverAuth and clientAuth, which node "
            "certificates need"
        )
    return node_id


def sae_id_of(cert: bytes | x509.Certificate) -> str:
    """The SAE ID an SAE certificate (PEM, DER or parsed) names: its one SAE URI SAN, with EKU
    clientAuth and no node URI."""
    c = load_certificate(cert)
    what = _describe(c)
    uris = _uris(c)
    saes = [unquote(u.removeprefix(SAE_URI_PREFIX)) for u in uris if u.startswith(SAE_URI_PREFIX)]
    if len(saes) != 1:
        raise NotAnSaeCertificate(
            f"{what} is not an SAE certificate: it needs exactly one URI SAN "
            f"{SAE_URI_PREFIX}<SAE ID>, found {len(saes)}"
        )
    if any(u.startswith(NODE_URI_PREFIX) for u in uris):
        raise NotAnSaeCertificate(f"{what} names a node; a node certificate cannot act as an SAE")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in _usages(c):
        raise NotAnSaeCertificate(f"{what} lacks extended key usage clientAuth")
    return saes[0]


def _ca_key_usage(_policy: Policy, _cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("the CA's key usage does not allow signing certificates")


# RFC 5280 path validation as the Web PKI profile does it, relaxed in two places so that CAs made
# by common tools (``openssl req -x509``, some cert-manager issuers) still verify: a CA need not
# carry KeyUsage (if it does, it must allow keyCertSign), and a leaf need not carry an Authority
# Key Identifier. Signatures, validity, CA flags and the clientAuth usage are still checked.
_CA_POLICY: Final = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage
)
_EE_POLICY: Final = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None
)


def verify_chain(
    cert: bytes | x509.Certificate,
    trusted: Sequence[x509.Certificate],
    *,
    intermediates: Sequence[x509.Certificate] = (),
    at: dt.datetime | None = None,
) -> None:
    """Raise ``UntrustedCertificate`` unless ``cert`` chains to one of ``trusted`` and is valid
    for client authentication at ``at`` (default now), by RFC 5280 path validation."""
    c = load_certificate(cert)
    what = _describe(c)
    if not trusted:
        raise UntrustedCertificate(f"{what} cannot be verified: no CA is trusted")
    builder = (
        PolicyBuilder()
        .store(Store(list(trusted)))
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
    )
    if at is not None:
        builder = builder.time(at)
    try:
        builder.build_client_verifier().verify(c, list(intermediates))
    except VerificationError as exc:
        detail = str(exc)
        if "candidates exhausted" in detail and "invalid" not in detail:
            detail = f"issued by {c.issuer.rfc4514_string()!r}, which is not a trusted CA"
        raise UntrustedCertificate(f"{what} is not trusted: {detail}") from None
