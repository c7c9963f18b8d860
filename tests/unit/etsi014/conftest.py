"""A real ETSI 014 server on loopback for the 014 unit tests: real certificates from
``controllers.pki``, mutual TLS, the real app, and the test client ``tests.etsi014_client``.

Behind the app sit two test doubles, clearly not the real thing:

- ``InMemoryDelivery`` stands in for the key delivery layer (``controllers.delivery``; the real
  one reserves keys in Redis and on the peer node). Every SAE is local to one node here; each
  (master, slave) pair has a stock of key bits; keys handed to the master wait, exactly once,
  for the slave to fetch them by ID. It keeps the contract's promises that the API relies on:
  all or nothing, waiting up to the timeout, one answer per request ID, each key served once.
- ``FingerprintAuthenticator`` stands in for the Sae registry: it accepts the certificates
  registered with it, by SHA-256 fingerprint, until they are revoked.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from controllers import pki
from controllers.delivery.api import (
    DeliveredKey,
    InsufficientKeys,
    NoRoute,
    PairStatus,
    UnknownKeys,
    UnknownSae,
)
from controllers.etsi014 import Etsi014Server, Etsi014Settings, init
from controllers.identity import NodeIdentity
from tests.etsi014_client import Etsi014Client
from tests.unit.identities import node_identity

NODE_ID = "node-a"
PEER_NODE_ID = "node-b"
KEY_SIZE = 256
# enc_keys waits this long for keys before the 503; short so the scarcity tests stay fast.
GET_KEYS_TIMEOUT = 0.3


class FingerprintAuthenticator:
    """Test double of the SaeAuthenticator: registered certificates by fingerprint."""

    def __init__(self) -> None:
        self._saes: dict[str, str] = {}

    def register(self, sae_id: str, credentials: pki.Credentials) -> None:
        self._saes[pki.fingerprint(credentials.cert_pem)] = sae_id

    def revoke(self, credentials: pki.Credentials) -> None:
        del self._saes[pki.fingerprint(credentials.cert_pem)]

    def authenticate(self, certificate_der: bytes) -> str | None:
        return self._saes.get(pki.fingerprint(certificate_der))


@dataclass
class _Pair:
    key_size: int
    max_key_count: int
    stock_bits: int


@dataclass
class InMemoryDelivery:
    """Test double of the key delivery layer (see the module docstring)."""

    node_id: str = NODE_ID
    saes: set[str] = field(default_factory=set)
    # SAEs the delivery layer reports as "not known yet" (retryable) rather than unknown.
    not_known_yet: set[str] = field(default_factory=set)
    pairs: dict[tuple[str, str], _Pair] = field(default_factory=dict)
    # Every call as (method, keyword arguments), for asserting what the API passed on.
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Raised by the next get_keys / get_keys_with_ids, to play a failing delivery layer.
    fail_with: Exception | None = None
    # Returned by the next get_keys instead of real keys, to play a broken delivery layer.
    broken_answer: list[DeliveredKey] | None = None
    _waiting_for_slave: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    _answers: dict[str, list[DeliveredKey]] = field(default_factory=dict)
    _stock_changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def link(self, master: str, slave: str, *, stock_keys: int = 100) -> None:
        """Key supply from ``master`` to ``slave``: ``stock_keys`` keys of KEY_SIZE bits now."""
        self.saes |= {master, slave}
        self.pairs[(master, slave)] = _Pair(KEY_SIZE, 1000, stock_keys * KEY_SIZE)

    async def add_keys(self, master: str, slave: str, count: int) -> None:
        async with self._stock_changed:
            self.pairs[(master, slave)].stock_bits += count * KEY_SIZE
            self._stock_changed.notify_all()

    def waiting_for_slave(self, master: str, slave: str) -> dict[str, bytes]:
        return dict(self._waiting_for_slave.get((master, slave), {}))

    def _pair(self, master: str, slave: str) -> _Pair:
        for sae in (master, slave):
            if sae not in self.saes:
                raise UnknownSae(
                    f"SAE {sae} is not registered here nor known from a neighbour",
                    retryable=sae in self.not_known_yet,
                )
        pair = self.pairs.get((master, slave))
        if pair is None:
            raise NoRoute(f"no key stream leads from {master}'s node to {slave}'s")
        return pair

    async def pair_status(self, *, master_sae_id: str, slave_sae_id: str) -> PairStatus:
        self.calls.append(("pair_status", {"master": master_sae_id, "slave": slave_sae_id}))
        pair = self._pair(master_sae_id, slave_sae_id)
        return PairStatus(
            source_node=self.node_id,
            target_node=PEER_NODE_ID,
            key_size=pair.key_size,
            stored_key_count=pair.stock_bits // pair.key_size,
            max_key_count=pair.max_key_count,
        )

    def _fail(self) -> None:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc

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
        self.calls.append(
            (
                "get_keys",
                {
                    "request_id": request_id,
                    "master": master_sae_id,
                    "slave": slave_sae_id,
                    "number": number,
                    "size_bits": size_bits,
                    "timeout": timeout,
                },
            )
        )
        self._fail()
        if self.broken_answer is not None:
            return self.broken_answer
        if request_id in self._answers:
            return self._answers[request_id]
        pair = self._pair(master_sae_id, slave_sae_id)
        needed = number * size_bits
        async with self._stock_changed:
            try:
                await asyncio.wait_for(
                    self._stock_changed.wait_for(lambda: pair.stock_bits >= needed), timeout
                )
            except TimeoutError:
                raise InsufficientKeys(
                    f"{number} keys of {size_bits} bits for {slave_sae_id} are not available "
                    f"within {timeout}s; {pair.stock_bits // size_bits} are"
                ) from None
            pair.stock_bits -= needed
        keys = [DeliveredKey(str(uuid.uuid4()), os.urandom(size_bits // 8)) for _ in range(number)]
        waiting = self._waiting_for_slave.setdefault((master_sae_id, slave_sae_id), {})
        waiting.update((k.key_id, k.material) for k in keys)
        self._answers[request_id] = keys
        return keys

    async def get_keys_with_ids(
        self, *, slave_sae_id: str, master_sae_id: str, key_ids: Sequence[str]
    ) -> list[DeliveredKey]:
        self.calls.append(
            (
                "get_keys_with_ids",
                {"slave": slave_sae_id, "master": master_sae_id, "key_ids": list(key_ids)},
            )
        )
        self._fail()
        self._pair(master_sae_id, slave_sae_id)
        waiting = self._waiting_for_slave.get((master_sae_id, slave_sae_id), {})
        unknown = [key_id for key_id in key_ids if key_id not in waiting]
        if unknown:
            raise UnknownKeys(
                f"keys {', '.join(unknown)} are not reserved for {slave_sae_id} by "
                f"{master_sae_id} (never were, or already delivered)"
            )
        return [DeliveredKey(key_id, waiting.pop(key_id)) for key_id in key_ids]


@dataclass
class Kme:
    """A running 014 server with its CA, doubles and a way to make SAE clients."""

    ca: pki.Credentials
    identity: NodeIdentity
    delivery: InMemoryDelivery
    authenticator: FingerprintAuthenticator
    server: Etsi014Server
    credentials: dict[str, pki.Credentials] = field(default_factory=dict)
    # What the app told its on_scarcity hook: (calling SAE, reason, message).
    scarcity: list[tuple[str, str, str]] = field(default_factory=list)
    _clients: list[Etsi014Client] = field(default_factory=list)

    def register_sae(self, sae_id: str) -> pki.Credentials:
        """Issue ``sae_id`` a certificate from the node CA and register it."""
        credentials = pki.issue_sae_certificate(self.ca, sae_id)
        self.authenticator.register(sae_id, credentials)
        self.credentials[sae_id] = credentials
        return credentials

    def client(self, credentials: pki.Credentials | None) -> Etsi014Client:
        """A 014 client presenting ``credentials`` (None: no client certificate)."""
        client = Etsi014Client(
            self.server.url,
            ca_pem=self.ca.cert_pem,
            cert_pem=credentials.cert_pem if credentials is not None else None,
            key_pem=credentials.key_pem if credentials is not None else None,
            timeout=5.0,
        )
        self._clients.append(client)
        return client

    def sae(self, sae_id: str) -> Etsi014Client:
        """A client for a registered SAE."""
        return self.client(self.credentials[sae_id])

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()
        await self.server.close()


@pytest.fixture(scope="session")
def node_ca() -> pki.Credentials:
    return pki.create_ca(f"{NODE_ID} CA")


@pytest.fixture
async def kme(node_ca: pki.Credentials) -> AsyncIterator[Kme]:
    """A 014 server on a free loopback port; SAEs sae-a and sae-b registered, with key supply
    both ways (100 keys of 256 bits each way)."""
    identity = node_identity(node_ca, NODE_ID)
    delivery = InMemoryDelivery()
    delivery.link("sae-a", "sae-b")
    delivery.link("sae-b", "sae-a")
    authenticator = FingerprintAuthenticator()
    settings = Etsi014Settings(host="127.0.0.1", port=0, get_keys_timeout=GET_KEYS_TIMEOUT)
    told: list[tuple[str, str, str]] = []
    app = init(
        delivery=delivery,
        authenticator=authenticator,
        settings=settings,
        on_scarcity=lambda *scarce: told.append(scarce),
    )
    server = Etsi014Server(app, identity=identity, settings=settings)
    await server.start()
    kme = Kme(node_ca, identity, delivery, authenticator, server, scarcity=told)
    kme.register_sae("sae-a")
    kme.register_sae("sae-b")
    try:
        yield kme
    finally:
        await kme.aclose()
