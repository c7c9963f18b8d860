"""Deciding about an SAE's credentials, as pure functions over a Secret's decoded data.

``controllers.saes.reconcile`` asks ``renewal_reason`` whether an issued credentials Secret can
be used as it is, builds a new one's data with ``issued_data``, and checks a user's Secret with
``manual_certificate``. Problems are ``CredentialsProblem``s whose ``reason`` becomes the Sae's
Ready condition reason; no message quotes a key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from controllers import pki

TLS_CRT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"
CA_CRT: Final = "ca.crt"

# An issued certificate this close to expiry is replaced: a month leaves the SAE's app (and its
# sidecar) ample time to pick up the new one before the old stops working.
RENEW_BEFORE: Final = dt.timedelta(days=30)


class CredentialsProblem(Exception):
    """An SAE's credentials are missing or unusable; ``reason`` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Checked:
    """A certificate that may be registered as an SAE's credential, and the CA that issued it."""

    certificate: x509.Certificate
    ca_pem: bytes


def issued_data(issued: pki.Credentials, ca_pem: bytes) -> dict[str, bytes]:
    """The data of a kubernetes.io/tls credentials Secret."""
    return {TLS_CRT: issued.cert_pem, TLS_KEY: issued.key_pem, CA_CRT: ca_pem}


def renewal_reason(
    data: Mapping[str, bytes], *, sae_id: str, ca_pem: bytes, now: dt.datetime
) -> str | None:
    """Why the issued credentials in ``data`` must be replaced, or None if they serve as they
    are: a certificate for ``sae_id`` from the node CA ``ca_pem``, its key, valid beyond
    ``RENEW_BEFORE``."""
    cert_pem, key_pem = data.get(TLS_CRT), data.get(TLS_KEY)
    if not cert_pem or not key_pem:
        return "the Secret lacks tls.crt or tls.key"
    if data.get(CA_CRT) != ca_pem:
        return "its ca.crt is not this node's CA"
    try:
        cert = pki.load_certificate(cert_pem)
        if pki.sae_id_of(cert) != sae_id:
            return "its certificate is for another SAE ID"
        pki.verify_chain(cert, pki.load_certificates(ca_pem), at=now)
        if not pki.key_matches(cert, key_pem):
            return "its tls.key does not belong to its tls.crt"
    except pki.CertificateError:
        return "its certificate is not a valid SAE certificate from this node's CA"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"its certificate expires within {RENEW_BEFORE.days} days"
    return None


def issued_certificate(data: Mapping[str, bytes], ca_pem: bytes) -> Checked:
    """The certificate of an issued Secret that ``renewal_reason`` accepted."""
    return Checked(certificate=pki.load_certificate(data[TLS_CRT]), ca_pem=ca_pem)


def manual_certificate(
    data: Mapping[str, bytes], *, sae_id: str, where: str, now: dt.datetime
) -> Checked:
    """The SAE certificate of a user's credentials Secret (``where``: namespace/name), checked:
    ``tls.crt`` names ``sae_id`` and chains to ``ca.crt`` now (``tls.key`` is not read)."""

    def invalid(message: str) -> CredentialsProblem:
        return CredentialsProblem("InvalidCredentials", f"Secret {where}: {message}")

    cert_pem, ca_pem = data.get(TLS_CRT), data.get(CA_CRT)
    if not cert_pem:
        raise invalid("no tls.crt; add the SAE's client certificate (PEM)")
    if not ca_pem:
        raise invalid("no ca.crt; add the CA that issued tls.crt (PEM)")
    try:
        chain = pki.load_certificates(cert_pem)
        named = pki.sae_id_of(chain[0])
    except pki.CertificateError as exc:
        raise invalid(f"tls.crt is not an SAE client certificate: {exc}") from None
    if named != sae_id:
        raise invalid(f"tls.crt is the certificate of SAE {named!r}, not of {sae_id!r}")
    try:
        anchors = pki.load_certificates(ca_pem)
    except pki.CertificateError as exc:
        raise invalid(f"ca.crt: {exc}") from None
    try:
        pki.verify_chain(chain[0], anchors, intermediates=chain[1:], at=now)
    except pki.CertificateError as exc:
        raise invalid(f"tls.crt does not verify with ca.crt: {exc}") from None
    return Checked(certificate=chain[0], ca_pem=ca_pem)
