"""Signing and verifying LSAs with Ed25519.

Each QSS node's routing engine (``controllers.routing.engine``) holds one ``RoutingKey``, made
fresh when the controller starts (it is never stored: a restarted node simply has a new key,
which its neighbours learn over the authenticated channel and vouch for in their K packets;
see ``controllers.routing.trust``). ``verify`` checks a signature against a public key in the
wire form of ``controllers.routing.messages`` (base64url, no padding).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class RoutingKey:
    """This node's LSA signing key. ``public`` is its public half in wire form."""

    def __init__(self, private: Ed25519PrivateKey | None = None) -> None:
        self._private = private or Ed25519PrivateKey.generate()
        raw = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = _b64(raw)

    def sign(self, data: bytes) -> str:
        return _b64(self._private.sign(data))

    def __repr__(self) -> str:
        return f"RoutingKey(public={self.public})"


@lru_cache(maxsize=4096)
def _public_key(public: str) -> Ed25519PublicKey | None:
    try:
        return Ed25519PublicKey.from_public_bytes(_unb64(public))
    except (ValueError, binascii.Error):
        return None


# Signatures already found good, while ``shared_verification`` is on (None otherwise).
_verified: set[tuple[str, str, bytes]] | None = None


@contextmanager
def shared_verification() -> Iterator[None]:
    """Within this block a signature found good once is not checked again. Only for simulations
    of many nodes in one process (``controllers.routing.memory``), whose set-up would otherwise
    verify every LSA once per node; the answers are the same, only cheaper. Never on in a
    controller, where each node is its own process anyway."""
    global _verified
    previous, _verified = _verified, set()
    try:
        yield
    finally:
        _verified = previous


def verify(public: str, signature: str, data: bytes) -> bool:
    """Whether ``signature`` is the signature of ``data`` by the key ``public``."""
    if _verified is not None and (public, signature, data) in _verified:
        return True
    if not _check(public, signature, data):
        return False
    if _verified is not None:
        _verified.add((public, signature, data))
    return True


def _check(public: str, signature: str, data: bytes) -> bool:
    key = _public_key(public)
    if key is None:
        return False
    try:
        key.verify(_unb64(signature), data)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
