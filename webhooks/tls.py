"""The webhook's own TLS, as pure functions: a self-signed CA, a serving certificate, and
``next_material``, the step function that rotates both before they expire.

``webhooks.certificates`` calls ``next_material`` on a timer (and on SIGHUP with
``force=True``), stores what it returns in a Secret, publishes ``TlsMaterial.bundle`` as the
``caBundle`` of the webhook's MutatingWebhookConfiguration and serves ``TlsMaterial.serving``.

The API server trusts exactly the ``caBundle`` it last read, and may read it a moment late, and
several webhook replicas may switch certificates at different times. So a CA change never
breaks a handshake:

1. steady state: the bundle holds the CA, the serving certificate is the CA's;
2. the CA is due (or rotation is forced): a new CA is made and the bundle becomes
   new CA + old CA, while the old serving certificate stays in use;
3. once the new bundle has been published for ``overlap`` (every replica and the API server
   have it), the serving certificate is reissued from the new CA;
4. ``overlap`` later (every replica serves the new certificate), the old CA leaves the bundle.

A serving certificate that is merely due is reissued from the same CA: nothing to publish.
Every certificate is EC P-256 with SHA-256, built by ``qss_api.certificates`` (which the node's
PKI shares). Private keys stay out of ``repr``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from qss_api import certificates

# Certificates start this long before they are made, against small clock differences between
# the webhook and the API server; a certificate's "made at" is its not-before plus this.
BACKDATE: Final = dt.timedelta(minutes=1)
CA_NAME: Final = "kube-qss webhook CA"


class TlsError(ValueError):
    """Stored TLS material that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(frozen=True, kw_only=True)
class Lifetimes:
    """How long certificates live and how early they are replaced."""

    ca_validity: dt.timedelta = dt.timedelta(days=365)
    ca_renew_before: dt.timedelta = dt.timedelta(days=60)
    serving_validity: dt.timedelta = dt.timedelta(days=30)
    serving_renew_before: dt.timedelta = dt.timedelta(days=10)
    # How long each step of a CA change waits for the API server and every replica to catch up.
    overlap: dt.timedelta = dt.timedelta(minutes=5)

    def __post_init__(self) -> None:
        if not dt.timedelta(0) < self.ca_renew_before < self.ca_validity:
            raise TlsError("the CA must be renewed before it expires: 0 < renew-before < validity")
        if not dt.timedelta(0) < self.serving_renew_before < self.serving_validity:
            raise TlsError(
                "the serving certificate must be renewed before it expires: "
                "0 < renew-before < validity"
            )
        if 2 * self.overlap >= self.ca_renew_before:
            raise TlsError("a CA change (twice the overlap) must finish before the old CA expires")


@dataclass(frozen=True, kw_only=True)
class ServingNames:
    """What the serving certificate names: the Service's DNS names and any IPs (a URL webhook)."""

    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.dns_names and not self.ips:
            raise TlsError("the serving certificate needs at least one DNS name or IP address")
        for ip in self.ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise TlsError(f"{ip!r} is not an IP address") from None

    def sans(self) -> list[x509.GeneralName]:
        return [x509.DNSName(n) for n in self.dns_names] + [
            x509.IPAddress(ipaddress.ip_address(ip)) for ip in self.ips
        ]


@dataclass(frozen=True, kw_only=True)
class TlsMaterial:
    ca: KeyPair
    serving: KeyPair
    # The CA being replaced, trusted beside ``ca`` until the change is complete.
    previous_ca_pem: bytes | None = None

    @property
    def bundle(self) -> bytes:
        """The caBundle to publish: the current CA, then the previous one if still needed."""
        return self.ca.cert_pem + (self.previous_ca_pem or b"")


def create_ca(*, now: dt.datetime, validity: dt.timedelta) -> KeyPair:
    cert, key = certificates.create_ca(CA_NAME, not_before=now - BACKDATE, not_after=now + validity)
    return KeyPair(cert_pem=certificates.cert_pem(cert), key_pem=certificates.key_pem(key))


def issue_serving(
    ca: KeyPair, names: ServingNames, *, now: dt.datetime, validity: dt.timedelta
) -> KeyPair:
    ca_cert = ca.certificate
    try:
        ca_key = certificates.load_private_key(ca.key_pem)
    except certificates.CertificateError as exc:
        raise TlsError(f"the stored CA key is unusable: {exc}") from None
    common_name = names.dns_names[0] if names.dns_names else names.ips[0]
    cert, key = certificates.issue_leaf(
        ca_cert,
        ca_key,
        common_name=common_name[:64],
        sans=names.sans(),
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        not_before=now - BACKDATE,
        not_after=min(now + validity, ca_cert.not_valid_after_utc),
    )
    return KeyPair(cert_pem=certificates.cert_pem(cert), key_pem=certificates.key_pem(key))


def made_at(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_before_utc + BACKDATE


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _names_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in san.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def _wanted_names(names: ServingNames) -> set[str]:
    return set(names.dns_names) | {str(ipaddress.ip_address(ip)) for ip in names.ips}


def next_material(
    current: TlsMaterial | None,
    *,
    names: ServingNames,
    lifetimes: Lifetimes,
    now: dt.datetime,
    published: bytes | None,
    force: bool = False,
) -> TlsMaterial | None:
    """The material to store and serve next, or None to keep ``current``.

    ``published`` is the caBundle the MutatingWebhookConfiguration holds now (None if unknown):
    the serving certificate moves to a new CA only once the API server can trust it.
    """
    if current is None:
        ca = create_ca(now=now, validity=lifetimes.ca_validity)
        serving = issue_serving(ca, names, now=now, validity=lifetimes.serving_validity)
        return TlsMaterial(ca=ca, serving=serving)
    ca_cert, serving_cert = current.ca.certificate, current.serving.certificate
    on_new_ca = signed_by(serving_cert, ca_cert)

    if current.previous_ca_pem is not None:  # a CA change is under way
        if not on_new_ca:
            if (
                now >= made_at(ca_cert) + lifetimes.overlap
                and published is not None
                and current.ca.cert_pem in published
            ):
                serving = issue_serving(
                    current.ca, names, now=now, validity=lifetimes.serving_validity
                )
                return replace(current, serving=serving)
            return None
        if now >= made_at(serving_cert) + lifetimes.overlap:
            return replace(current, previous_ca_pem=None)
        return None

    if force or ca_cert.not_valid_after_utc - now <= lifetimes.ca_renew_before:
        ca = create_ca(now=now, validity=lifetimes.ca_validity)
        return replace(current, ca=ca, previous_ca_pem=current.ca.cert_pem)
    if (
        not on_new_ca
        or serving_cert.not_valid_after_utc - now <= lifetimes.serving_renew_before
        or _names_of(serving_cert) != _wanted_names(names)
    ):
        serving = issue_serving(current.ca, names, now=now, validity=lifetimes.serving_validity)
        return replace(current, serving=serving)
    return None
