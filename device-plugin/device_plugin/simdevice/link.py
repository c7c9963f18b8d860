"""The state both ends of a simulated device pair share: the QKD link and its key streams.

A ``Link`` is the physics and bookkeeping of one pair: its secret key rate, its faults (link
down, rate change, QBER) and the key streams opened on it. Both ends' ``protocol.Device``
objects hold the same ``Link`` (the pair runs in one process, see ``main``), which is how each end
knows whether its peer has opened a stream, and how both agree on how much key exists: a stream
generates key at its share of the link rate, on the link's clock, from the moment both ends have
opened it; the rate is integrated piecewise, so a rate change or an outage affects both ends
alike. Pure logic with an injectable clock; no I/O.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from qss_api.qkd004 import QoS, Reason, Refusal, Status, refusal

End = Literal["A", "B"]
PEER: dict[End, End] = {"A": "B", "B": "A"}

# Rates are compared with this slack (bits/s) so that float shares do not refuse exact fits.
_EPSILON = 1e-6


class Refused(Exception):
    """A request the device answers with a non-zero status; ``reply`` is that answer.

    ``jitter``, ``priority`` and ``ttl`` of a stream's QoS are recorded and echoed but do not
    change the simulation."""

    def __init__(self, status: Status, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.reply: Refusal = refusal(status, reason, message, **details)


@dataclass(slots=True)
class Stream:
    ksid: str
    qos: QoS
    # Fraction of the link rate this stream gets; 0 once aborted.
    share: float
    # The ends that have the stream open, with the (source, destination) each gave.
    ends: dict[End, tuple[str, str]] = field(default_factory=dict)
    # The next index GET_KEY returns at each end when the request names none.
    cursor: dict[End, int] = field(default_factory=lambda: {"A": 0, "B": 0})
    # Generation starts when both ends are open and then runs for the stream's life.
    running: bool = False
    bits: float = 0.0
    bits_at: float = 0.0
    aborted: str | None = None

    @property
    def chunk_bits(self) -> int:
        return self.qos.key_chunk_size * 8


class Link:
    def __init__(
        self,
        *,
        rate_bps: int,
        qber: float,
        qber_threshold: float,
        buffer_bits: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_bps = rate_bps
        self.qber = qber
        self.qber_threshold = qber_threshold
        self.link_up = True
        # Each stream keeps at most this much generated key (per stream); older chunks are gone.
        self.buffer_bits = buffer_bits
        self._clock = clock
        self._streams: dict[str, Stream] = {}
        # KSIDs closed at both ends: never reopened, so key material is never issued twice.
        self._retired: set[str] = set()

    # -- faults --------------------------------------------------------------------------------

    @property
    def qber_ok(self) -> bool:
        return self.qber <= self.qber_threshold

    @property
    def healthy(self) -> bool:
        return self.link_up and self.qber_ok

    def set_faults(
        self,
        *,
        link_down: bool | None = None,
        rate_bps: int | None = None,
        qber: float | None = None,
    ) -> None:
        """Switch faults; a stream's key so far is kept, only its future rate changes."""
        self._advance()
        if link_down is not None:
            self.link_up = not link_down
        if rate_bps is not None:
            self.rate_bps = rate_bps
        if qber is not None:
            self.qber = qber
            if not self.qber_ok:
                for stream in self._streams.values():
                    if stream.aborted is None:
                        stream.aborted = (
                            f"QBER {qber:.3f} above threshold {self.qber_threshold:.3f}"
                        )
                        stream.share = 0.0

    # -- streams -------------------------------------------------------------------------------

    def streams_at(self, end: End) -> list[Stream]:
        return [s for s in self._streams.values() if end in s.ends]

    def stream_rate(self, stream: Stream) -> float:
        if not self.link_up or stream.aborted is not None:
            return 0.0
        return stream.share * self.rate_bps

    def open(
        self, end: End, *, ksid: str | None, source: str, destination: str, qos: QoS
    ) -> tuple[Status, Stream]:
        """OPEN_CONNECT at ``end``: SUCCESS when the peer already has ``ksid`` open,
        PEER_NOT_CONNECTED when this end is the first (the stream is open regardless)."""
        self._check_connection()
        if ksid is not None and ksid in self._retired:
            raise Refused(
                Status.KSID_IN_USE,
                "ksid_retired",
                f"key stream {ksid} was closed at both ends and is never reopened; use a new ID",
            )
        stream = self._streams.get(ksid) if ksid is not None else None
        if stream is None:
            stream = self._new_stream(ksid or str(uuid.uuid4()), qos)
        else:
            if end in stream.ends:
                raise Refused(
                    Status.KSID_IN_USE,
                    "ksid_in_use",
                    f"key stream {stream.ksid} is already open at this end",
                )
            if stream.aborted is not None:
                raise Refused(
                    Status.KSID_IN_USE,
                    "ksid_aborted",
                    f"key stream {stream.ksid} was aborted ({stream.aborted}); close it and"
                    " open a new one",
                )
            if qos.key_chunk_size != stream.qos.key_chunk_size:
                raise Refused(
                    Status.QOS_NOT_MET,
                    "chunk_size_mismatch",
                    f"the peer opened key stream {stream.ksid} with key_chunk_size"
                    f" {stream.qos.key_chunk_size}, not {qos.key_chunk_size}",
                )
        stream.ends[end] = (source, destination)
        if len(stream.ends) == 2 and not stream.running:
            stream.running = True
            stream.bits_at = self._clock()
        status = Status.SUCCESS if PEER[end] in stream.ends else Status.PEER_NOT_CONNECTED
        return status, stream

    def close(self, end: End, ksid: str) -> None:
        stream = self.stream_at(end, ksid)
        del stream.ends[end]
        if not stream.ends:
            del self._streams[ksid]
            self._retired.add(ksid)

    def awaiting(self, end: End) -> list[str]:
        """The streams the peer end has open that ``end`` has not (the ones it could join)."""
        return [
            s.ksid
            for s in self._streams.values()
            if PEER[end] in s.ends and end not in s.ends and s.aborted is None
        ][:100]

    def has_stream(self, ksid: str) -> bool:
        return ksid in self._streams

    def stream_at(self, end: End, ksid: str) -> Stream:
        stream = self._streams.get(ksid)
        if stream is None or end not in stream.ends:
            raise Refused(
                Status.NO_QKD_CONNECTION,
                "unknown_ksid",
                f"key stream {ksid} is not open at this end; OPEN_CONNECT it first",
            )
        return stream

    # -- key availability ----------------------------------------------------------------------

    def window(self, end: End, stream: Stream) -> tuple[int, int]:
        """The indices GET_KEY can serve now at ``end``: ``[oldest, next)``.

        Refuses when the stream cannot serve key at all: link down, aborted, peer not open."""
        self._check_connection()
        if stream.aborted is not None:
            raise Refused(
                Status.NO_QKD_CONNECTION,
                "aborted",
                f"key stream {stream.ksid} was aborted: {stream.aborted}; close it and open a"
                " new one",
            )
        if PEER[end] not in stream.ends:
            raise Refused(
                Status.GET_KEY_PEER_NOT_CONNECTED,
                Reason.PEER_NOT_CONNECTED,
                f"the peer has not opened key stream {stream.ksid} (or has closed it)",
                peer_key_stream_IDs=self.awaiting(end),
            )
        generated = self._generated_chunks(stream)
        kept = max(1, self.buffer_bits // stream.chunk_bits)
        return max(0, generated - kept), generated

    def seconds_until(self, stream: Stream, index: int) -> float | None:
        """How long until chunk ``index`` exists at the current rate; None if never."""
        rate = self.stream_rate(stream)
        if rate <= 0 or not stream.running:
            return None
        needed = (index + 1) * stream.chunk_bits - self._bits(stream, self._clock())
        return max(0.0, needed / rate)

    # -- internals -----------------------------------------------------------------------------

    def _check_connection(self) -> None:
        if not self.link_up:
            raise Refused(Status.NO_QKD_CONNECTION, "link_down", "the QKD link is down")
        if not self.qber_ok:
            raise Refused(
                Status.NO_QKD_CONNECTION,
                "qber_too_high",
                f"QBER {self.qber:.3f} is above the threshold {self.qber_threshold:.3f};"
                " no secret key can be distilled",
            )

    def _new_stream(self, ksid: str, qos: QoS) -> Stream:
        used = sum(s.share for s in self._streams.values())
        free_bps = max(0.0, (1.0 - used) * self.rate_bps)
        wanted = float(qos.max_bps) if qos.max_bps > 0 else free_bps
        if qos.max_bps > self.rate_bps:
            raise Refused(
                Status.QOS_NOT_MET,
                "rate_unavailable",
                f"max_bps {qos.max_bps} is above the device's secret key rate {self.rate_bps}",
                device_bps=self.rate_bps,
            )
        if wanted > free_bps + _EPSILON or wanted <= 0 or wanted + _EPSILON < qos.min_bps:
            raise Refused(
                Status.QOS_NOT_MET,
                "rate_unavailable",
                f"the device has {free_bps:.0f} bits/s left for new streams; requested"
                f" max_bps {qos.max_bps}, min_bps {qos.min_bps}",
                device_bps=self.rate_bps,
                free_bps=int(free_bps),
            )
        granted = qos.model_copy(update={"max_bps": int(wanted)})
        stream = Stream(ksid=ksid, qos=granted, share=wanted / self.rate_bps)
        self._streams[ksid] = stream
        return stream

    def _bits(self, stream: Stream, now: float) -> float:
        if not stream.running:
            return 0.0
        return stream.bits + self.stream_rate(stream) * (now - stream.bits_at)

    def _generated_chunks(self, stream: Stream) -> int:
        return math.floor(self._bits(stream, self._clock()) / stream.chunk_bits + 1e-9)

    def _advance(self) -> None:
        """Bank every stream's key so far, before a change of rate."""
        now = self._clock()
        for stream in self._streams.values():
            if stream.running:
                stream.bits = self._bits(stream, now)
                stream.bits_at = now
