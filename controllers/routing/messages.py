"""The routing protocol's wire messages: LSAs and the three messages that carry them.

One module that both ends import (``controllers.routing.channel`` decodes every request and
answer with ``qss_api.wire.decode``/``check`` before the engine sees it; the in-memory transport
hands the same objects over directly). The fields follow the paper's Table 2:

=============  ==============================================================================
Table 2        here
=============  ==============================================================================
version        ``Lsa.version`` (1)
type           ``Lsa.type``: ``S`` (the node's SAEs) or ``K`` (its links and their costs)
source         ``Lsa.source``: the originating node's ID (its address is its QKDLinks' business)
routing        not needed: the routing module speaks over the node's inter-node channel
forwarder      ``Flood.forwarder``, which must be the node the channel authenticated
neighbors      ``Lsa.saes`` for S packets, ``Lsa.links`` for K packets
timestamp      ``Lsa.timestamp``: creation time, ms since the epoch (informative)
authentication ``Lsa.key`` + ``Lsa.signature``: Ed25519 over ``signed_bytes(lsa)``
=============  ==============================================================================

plus what a robust link-state protocol needs: a per-origin sequence number (``seq``), a lifetime
(``lifetime``, signed) and an age (``age``, seconds since origination as the sender reckons it;
not signed, because every hop changes it; see ``docs/routing.md`` for why that is safe).

Every list is sorted and free of duplicates, so one LSA has exactly one encoding and
``signed_bytes`` is canonical: sorted keys, no whitespace, integers only (costs are in
thousandths, so sums are exact and every node breaks ties alike).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Final, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from qss_api.wire import NodeId, SaeId, WireModel

VERSION: Final = 1

HELLO_PATH: Final = "/qss/v1/routing/hello"
EXCHANGE_PATH: Final = "/qss/v1/routing/exchange"
FLOOD_PATH: Final = "/qss/v1/routing/flood"

# An Ed25519 public key (32 bytes) and signature (64 bytes), base64url without padding.
PublicKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{85}[AQgw]$")]
# Sequence numbers grow with every origination; 63 bits, as signed 64-bit integers elsewhere.
Seq = Annotated[int, Field(ge=1, le=2**63 - 1)]
# A link cost K_i(t) in thousandths (equation 2 gives at least 1.000, see controllers.linkcost).
MilliCost = Annotated[int, Field(ge=1, le=10**9)]

# Bounds that keep one message well inside the channel's body limit (1 MiB, aiohttp's default)
# for networks of hundreds of nodes; a node with more SAEs or links than this is not plausible.
MAX_SAES: Final = 2_000
MAX_LINKS: Final = 256
MAX_LSAS: Final = 4_000
# An LSA lives between a minute and a day; the originator refreshes it well before that.
MIN_LIFETIME: Final = 10
MAX_LIFETIME: Final = 86_400

_SIGNED_PREFIX: Final = b"kube-qss routing LSA v1\n"
_UNSIGNED_FIELDS: Final = frozenset({"signature", "age"})


class LinkEntry(WireModel):
    """One link of a K packet: the neighbour, the cost towards it, and the neighbour's routing
    key as the originator learnt it over the authenticated channel (its vouch for that key)."""

    node: NodeId
    cost: MilliCost
    key: PublicKey


class Lsa(WireModel):
    version: Literal[1]
    type: Literal["S", "K"]
    source: NodeId
    seq: Seq
    timestamp: Annotated[int, Field(ge=0, le=2**53)]
    lifetime: Annotated[int, Field(ge=MIN_LIFETIME, le=MAX_LIFETIME)]
    key: PublicKey
    saes: Annotated[tuple[SaeId, ...], Field(max_length=MAX_SAES)] = ()
    links: Annotated[tuple[LinkEntry, ...], Field(max_length=MAX_LINKS)] = ()
    signature: Signature
    age: Annotated[int, Field(ge=0, le=MAX_LIFETIME)] = 0

    @field_validator("saes")
    @classmethod
    def _saes_sorted(cls, saes: tuple[str, ...]) -> tuple[str, ...]:
        if any(a >= b for a, b in itertools.pairwise(saes)):
            raise ValueError("SAE IDs must be sorted and unique")
        return saes

    @field_validator("links")
    @classmethod
    def _links_sorted(cls, links: tuple[LinkEntry, ...]) -> tuple[LinkEntry, ...]:
        if any(a.node >= b.node for a, b in itertools.pairwise(links)):
            raise ValueError("links must be sorted by node and name each node once")
        return links

    @model_validator(mode="after")
    def _fits_its_type(self) -> Lsa:
        if self.type == "S" and self.links:
            raise ValueError("an S packet lists SAEs, not links")
        if self.type == "K" and self.saes:
            raise ValueError("a K packet lists links, not SAEs")
        if any(link.node == self.source for link in self.links):
            raise ValueError("a node has no link to itself")
        return self

    @cached_property
    def ident(self) -> tuple[str, str]:
        """(source, type): which LSA this is an instance of."""
        return self.source, self.type

    @cached_property
    def signed(self) -> bytes:
        """What the originator signs (``signed_bytes``), computed once per instance."""
        return signed_bytes(self)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Lsa:
        """A copy; the cached ``ident`` and ``signed`` go with it only when nothing they are
        made of changed (pydantic copies the instance's ``__dict__``, caches included)."""
        copied = super().model_copy(update=update, deep=deep)
        if update and not set(update) <= _UNSIGNED_FIELDS:
            copied.__dict__.pop("signed", None)
            copied.__dict__.pop("ident", None)
        return copied


class Hello(WireModel):
    """Who is calling (or answering) and with which routing key; a neighbour's key is trusted
    because the channel's mutual TLS has authenticated the node that sends it."""

    version: Literal[1]
    node: NodeId
    key: PublicKey


class Exchange(WireModel):
    """A full database exchange when a neighbour comes up: the sender's hello and every LSA it
    holds (request and answer alike)."""

    hello: Hello
    lsas: Annotated[tuple[Lsa, ...], Field(max_length=MAX_LSAS)] = ()


class Flood(WireModel):
    """LSAs passed on by ``forwarder``. The answer is a Flood too: the newer copies the receiver
    holds of any LSA the request carried an older instance of."""

    forwarder: NodeId
    lsas: Annotated[tuple[Lsa, ...], Field(max_length=MAX_LSAS)] = ()


def signed_bytes(lsa: Lsa) -> bytes:
    """What the originator signs: every field but ``signature`` and ``age``, canonically."""
    body = {
        "version": lsa.version,
        "type": lsa.type,
        "source": lsa.source,
        "seq": lsa.seq,
        "timestamp": lsa.timestamp,
        "lifetime": lsa.lifetime,
        "key": lsa.key,
        "saes": list(lsa.saes),
        "links": [{"node": x.node, "cost": x.cost, "key": x.key} for x in lsa.links],
    }
    return _SIGNED_PREFIX + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
