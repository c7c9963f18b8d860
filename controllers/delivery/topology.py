"""Which key streams lead to which neighbour node, kept in memory from the watch events.

The controller's kopf event handlers call ``update_link``/``update_stream``/``forget_*`` for every
QKDLink and KeyStream change; key delivery asks ``streams_towards(node)`` on every request, so
the answer must come from memory, not from the API server. ``ksid_of`` gives a stream's KSID
(the KeyStream's, or the default both QKDMs derive), from which chunk IDs follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controllers.qkdm.ids import default_ksid


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    link: str
    state: str
    available: int
    chunk_bits: int
    ksid: str | None = None  # the KeyStream's own, if it names one


@dataclass
class Topology:
    node_id: str = ""  # this node's ID (for the default KSID)
    _link_peer: dict[str, str] = field(default_factory=dict)  # QKDLink name -> peer node ID
    _streams: dict[str, StreamInfo] = field(default_factory=dict)

    def update_link(self, link: Mapping[str, Any]) -> None:
        name = str(link["metadata"]["name"])
        self._link_peer[name] = str((link.get("spec") or {}).get("peerNodeID", ""))

    def forget_link(self, name: str) -> None:
        self._link_peer.pop(name, None)

    def update_stream(self, stream: Mapping[str, Any]) -> None:
        spec = stream.get("spec") or {}
        status = stream.get("status") or {}
        name = str(stream["metadata"]["name"])
        self._streams[name] = StreamInfo(
            name=name,
            link=str(spec.get("link", "")),
            state=str(status.get("state", "Unknown")),
            available=int(status.get("availableKeys", 0)),
            chunk_bits=int((spec.get("qos") or {}).get("keyChunkSize", 256)),
            ksid=str(spec["ksid"]) if spec.get("ksid") else None,
        )

    def forget_stream(self, name: str) -> None:
        self._streams.pop(name, None)

    def peer_of_stream(self, stream: str) -> str | None:
        info = self._streams.get(stream)
        return self._link_peer.get(info.link) if info else None

    def ksid_of(self, stream: str) -> str | None:
        """The stream's KSID as its QKDMs use it, or None while its link is unknown."""
        info = self._streams.get(stream)
        peer = self.peer_of_stream(stream)
        if info is None or peer is None:
            return None
        return info.ksid or default_ksid(node_a=self.node_id, node_b=peer, stream=stream)

    def streams_towards(self, node: str) -> list[StreamInfo]:
        """Streams whose link ends at ``node``: Up ones first, then the fullest."""
        found = [s for s in self._streams.values() if self._link_peer.get(s.link) == node]
        return sorted(found, key=lambda s: (s.state != "Up", -s.available, s.name))

    def streams(self) -> list[StreamInfo]:
        return sorted(self._streams.values(), key=lambda s: s.name)

    def neighbours(self) -> set[str]:
        return set(self._link_peer.values())
