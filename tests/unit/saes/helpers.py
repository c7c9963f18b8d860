"""Small helpers shared by the SAE unit tests."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from controllers import pki


def der(credentials: pki.Credentials) -> bytes:
    """The DER form of a credential's certificate, as a TLS layer hands it over."""
    return credentials.certificate.public_bytes(serialization.Encoding.DER)
