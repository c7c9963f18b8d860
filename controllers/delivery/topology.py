"""Which key streams lead to which neighbour node, kept in memory from the watch events.

The controller's kopf event handlers call ``update_link``/``update_stream``/``forget_*`` for every
QKDLink and KeyStream change; key delivery asks ``streams_towards(node)`` on every request, so
the answer must come from memory, not from the API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    link: str
    state: str
    available: int
    chunk_bits: int


@dataclass
class Topology:
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
        )

    def forget_stream(self, name: str) -> None:
        self._streams.pop(name, None)

    def peer_of_stream(self, stream: str) -> str | None:
        info = self._streams.get(stream)
        return self._link_peer.get(info.link) if info else None

    def streams_towards(self, node: str) -> list[StreamInfo]:
        """Streams whose link ends at ``node``: Up ones first, then the fullest."""
        found = [s for s in self._streams.values() if self._link_peer.get(s.link) == node]
        return sorted(found, key=lambda s: (s.state != "Up", -s.available, s.name))

    def streams(self) -> list[StreamInfo]:
        return sorted(self._streams.values(), key=lambda s: s.name)

    def neighbours(self) -> set[str]:
        return set(self._link_peer.values())
