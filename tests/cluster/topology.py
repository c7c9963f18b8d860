"""A local QSS network described in a small YAML file: its nodes, the QKD links between them
(key rate, buffer capacity), and the SAEs registered with each node.

``load_topology(path)`` reads and checks a file (``TopologyError`` says what is wrong, with the
field's place in the file); ``NetworkTopology.build(network)`` adds what the file describes to a
``tests.cluster.network.QssNetwork`` (nodes it lacks, links, SAEs), which is how
``running_network(topology=...)``, ``make demo TOPOLOGY=...`` and the routing tests use it.
The format is documented in the README; ``examples/topologies/`` holds examples.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qss_api.wire import NodeId, SaeId, problems_of

if TYPE_CHECKING:
    from tests.cluster.localcluster import Cluster
    from tests.cluster.network import QssNetwork

DEFAULT_SAE_NAMESPACE = "default"


class TopologyError(ValueError):
    """A topology file that cannot be used; the message says where and what."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Node(_Model):
    id: NodeId
    saes: tuple[SaeId, ...] = ()


class _Link(_Model):
    between: tuple[NodeId, NodeId]
    key_rate_bps: Annotated[int, Field(alias="keyRateBps", gt=0, le=10**10)]
    buffer_capacity: Annotated[int, Field(alias="bufferCapacity", gt=0, le=10**9)] = 100_000
    chunk_bits: Annotated[int, Field(alias="chunkBits", ge=8, le=65536, multiple_of=8)] = 256
    name: Annotated[str | None, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] = None


class _File(_Model):
    sae_namespace: Annotated[
        str, Field(alias="saeNamespace", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ] = DEFAULT_SAE_NAMESPACE
    nodes: Annotated[tuple[_Node, ...], Field(min_length=1)]
    links: tuple[_Link, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> _File:
        ids = [n.id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ValueError("every node id must appear once")
        saes = [s for n in self.nodes for s in n.saes]
        if len(set(saes)) != len(saes):
            raise ValueError("an SAE ID may be registered with one node only")
        streams = set()
        for link in self.links:
            a, b = link.between
            if a == b:
                raise ValueError(f"a link joins two different nodes, not {a} with itself")
            for end in (a, b):
                if end not in ids:
                    raise ValueError(f"link between {a} and {b}: no node {end} in nodes")
            stream = link.name or f"{min(a, b)}-{max(a, b)}"
            if stream in streams:
                raise ValueError(f"two links named {stream}; give parallel links a name")
            streams.add(stream)
        return self


@dataclass(frozen=True)
class TopologyLink:
    a: str
    b: str
    key_rate_bps: int
    buffer_capacity: int
    chunk_bits: int = 256
    name: str | None = None

    @property
    def stream(self) -> str:
        """The KeyStream's name (and the QKDLinks', when the link is named)."""
        return self.name or f"{min(self.a, self.b)}-{max(self.a, self.b)}"


@dataclass(frozen=True)
class NetworkTopology:
    nodes: dict[str, tuple[str, ...]]  # node ID -> its SAE IDs
    links: tuple[TopologyLink, ...]
    sae_namespace: str = DEFAULT_SAE_NAMESPACE

    def node_of(self, sae_id: str) -> str:
        return next(n for n, saes in self.nodes.items() if sae_id in saes)

    def renamed(self, *, link_prefix: str = "", sae_prefix: str = "") -> NetworkTopology:
        """The same network with every link named and every SAE ID prefixed (tests sharing
        clusters keep their objects apart this way)."""
        return replace(
            self,
            nodes={n: tuple(sae_prefix + s for s in saes) for n, saes in self.nodes.items()},
            links=tuple(replace(link, name=link_prefix + link.stream) for link in self.links),
        )

    def build(
        self, network: QssNetwork, *, cluster_for: Callable[[str], Cluster] | None = None
    ) -> None:
        """Add to ``network`` the nodes it lacks (on ``cluster_for(node)``), every link it
        lacks, and every SAE (waiting until each is Ready)."""
        for node in self.nodes:
            if node not in network.nodes:
                if cluster_for is None:
                    raise TopologyError(f"node {node} is not in the network and no cluster given")
                network.add_node(node, cluster_for(node))
        for link in self.links:
            if link.stream not in network.links:
                network.add_link(
                    link.a,
                    link.b,
                    rate_bps=link.key_rate_bps,
                    capacity=link.buffer_capacity,
                    chunk_bits=link.chunk_bits,
                    name=link.name,
                )
        for node, saes in self.nodes.items():
            for sae_id in saes:
                network.register_sae(node, self.sae_namespace, sae_object_name(sae_id), sae_id)


def sae_object_name(sae_id: str) -> str:
    """The Sae object's name for an SAE ID (object names are lower case, no '_' or '.')."""
    return re.sub(r"[^a-z0-9-]+", "-", sae_id.lower()).strip("-") or "sae"


def parse_topology(data: Any, *, where: str = "topology") -> NetworkTopology:
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{p['parameter']}: {p['error']}" if p["parameter"] else p["error"]
            for p in problems_of(exc)
        )
        raise TopologyError(f"{where}: {problems}") from None
    return NetworkTopology(
        nodes={n.id: n.saes for n in parsed.nodes},
        links=tuple(
            TopologyLink(
                a=link.between[0],
                b=link.between[1],
                key_rate_bps=link.key_rate_bps,
                buffer_capacity=link.buffer_capacity,
                chunk_bits=link.chunk_bits,
                name=link.name,
            )
            for link in parsed.links
        ),
        sae_namespace=parsed.sae_namespace,
    )


def load_topology(path: Path) -> NetworkTopology:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TopologyError(f"cannot read topology file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path} is not YAML: {exc}") from None
    return parse_topology(data, where=str(path))
