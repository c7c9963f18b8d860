"""The contract of key delivery, shared by its callers (KeyRequest reconciler, ETSI 014 API).

Callers depend on these protocols and types only; ``controllers.delivery.service`` implements
them. Errors carry a CamelCase ``reason`` that becomes a condition reason or an HTTP status, and
a message that never contains key material.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Bounds of what one request may ask for; the CRD and the 014 status report the same numbers.
MAX_KEYS_PER_REQUEST = 1000
MIN_KEY_SIZE = 8
MAX_KEY_SIZE = 32768


class DeliveryError(Exception):
    """A request that cannot be served. ``retryable`` says whether waiting may help."""

    reason = "DeliveryFailed"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownSae(DeliveryError):
    """No SAE with that ID is registered here or known from a neighbour. Whoever raises it
    says whether waiting may help: ``retryable`` while some neighbour has not told us its SAEs
    yet (``SaeDirectory.is_known_absent`` is False), not once all have and none has it."""

    reason = "UnknownSae"

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class NoRoute(DeliveryError):
    """The peer SAE's node is known but no usable key stream leads there."""

    reason = "NoRoute"
    retryable = True


class InsufficientKeys(DeliveryError):
    """Not enough keys now; more may arrive."""

    reason = "InsufficientKeys"
    retryable = True


class SlaveBacklog(InsufficientKeys):
    """The slave SAE's node holds as many keys for slave SAEs as it may: keys delivered to
    masters that their slaves have not fetched. They expire, so waiting helps."""

    reason = "SlaveBacklog"


# The reasons of a shortage of keys: what an operator is told of by an Event, besides the error.
SCARCITY_REASONS: frozenset[str] = frozenset({InsufficientKeys.reason, SlaveBacklog.reason})


class KeyConflict(DeliveryError):
    """Both nodes chose the same keys at once (the buffer was nearly empty); those keys are
    dropped, so this request fails now and a new one gets others."""

    reason = "KeyConflict"
    retryable = True


class PeerUnreachable(DeliveryError):
    """The peer node did not answer, or refused us."""

    reason = "PeerUnreachable"
    retryable = True


class RelayFailed(DeliveryError):
    """A node on a multi-hop path refused the relay (a bad tag, keys not held there, the relay
    aborted); nothing was delivered and nothing stays held, so a new request may succeed."""

    reason = "RelayFailed"
    retryable = True


class UnknownKeys(DeliveryError):
    """Some key IDs are not reserved for this SAE pair (never were, or already delivered)."""

    reason = "UnknownKeys"


class InvalidRequest(DeliveryError):
    """The request itself is malformed (sizes, counts, IDs), or can never be served."""

    reason = "InvalidRequest"


class SameNodePair(InvalidRequest):
    """Both SAEs are registered with this node: QKD keys are shared between two nodes, so
    there is no key stream between an SAE and another on the same node."""


class RequestTooLarge(InvalidRequest):
    """More key material than the stream's buffer can ever hold at once."""


@dataclass(frozen=True, slots=True)
class DeliveredKey:
    key_id: str
    material: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PairStatus:
    """What the ETSI 014 status call reports for a (master SAE, slave SAE) pair."""

    source_node: str
    target_node: str
    key_size: int  # bits of one key by default (the stream's chunk size)
    stored_key_count: int  # keys of key_size available towards the target now
    max_key_count: int  # keys of key_size the buffer can hold


class KeyDelivery(Protocol):
    """Gets keys shared between a local SAE and a remote one, each exactly once."""

    node_id: str

    async def pair_status(self, *, master_sae_id: str, slave_sae_id: str) -> PairStatus:
        """Status of the key supply from ``master_sae_id`` (local) to ``slave_sae_id``."""
        ...

    async def get_keys(
        self,
        *,
        request_id: str,
        master_sae_id: str,
        slave_sae_id: str,
        number: int,
        size_bits: int,
        timeout: float,
    ) -> list[DeliveredKey]:
        """Master side (getKey / enc_keys): ``number`` fresh keys the slave SAE's node holds
        alike for ``slave_sae_id``, delivered (they are gone here once returned). Waits up to
        ``timeout`` seconds for keys, then raises ``InsufficientKeys``; never returns part of a
        set. ``request_id`` names the request in logs."""
        ...

    async def get_keys_with_ids(
        self, *, slave_sae_id: str, master_sae_id: str, key_ids: Sequence[str]
    ) -> list[DeliveredKey]:
        """Slave side (getKeyWithId / dec_keys): the keys held here for ``slave_sae_id`` and the
        master SAE under ``key_ids``, each delivered once (``UnknownKeys`` otherwise)."""
        ...


class SaeAuthenticator(Protocol):
    """Tells which local SAE a client certificate belongs to (ETSI 014 authentication)."""

    def authenticate(self, certificate_der: bytes) -> str | None:
        """The SAE ID if the certificate is the current credential of a registered local SAE;
        None for an unknown, revoked or superseded certificate."""
        ...
