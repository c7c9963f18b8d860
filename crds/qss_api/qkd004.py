"""The QKD device interface (ETSI GS QKD 004 style): every message, status code and reason word,
defined once for everyone who speaks it.

Who imports this: the simulated device (``device_plugin.simdevice``, the server side), the QKDM
(``controllers.qkdm``) and the device plugin's health probe through the one client
(``qss_api.qkd004_client``), and the tests. The components share nothing but ``qss_api``, so
the protocol lives here.

Framing: newline-delimited JSON over a Unix socket, one request and one reply per line, replies
in request order. Every request has ``op``; an optional ``id`` (integer or string) is echoed
back. Every reply has ``status`` (an ETSI GS QKD 004 status code, or -1 for a request the device
could not read); a refusal (non-zero status) also has ``reason``, a stable word, and
``message``, a sentence.

The ops:

- ``OPEN_CONNECT {source, destination, qos?, key_stream_ID?}`` -> ``Opened``: status 0 when
  the peer end has the stream open too, 1 (``PEER_NOT_CONNECTED``) when this end is the first
  (the stream is open regardless). A missing KSID gets a new UUID.
- ``GET_KEY {key_stream_ID, index?, count?, metadata_size?}`` -> ``Keys``: chunks ``index``,
  ``index + 1``, ... of the stream, as many as exist now up to ``count`` (default 1) and
  ``MAX_RUN_BYTES`` of material, concatenated in ``key_buffer`` (base64). ETSI GS QKD 004's
  GET_KEY returns one chunk; ``count`` is this interface's bulk form of the same call (a run of
  consecutive indices in one reply, as a device's bulk read would), so that a QKDM can take
  100 Mbit/s without one JSON line per chunk. Without ``index``: this end's next index.
- ``CLOSE {key_stream_ID}`` -> ``Closed``. A KSID closed at both ends is never reopened.
- ``HEALTH`` and ``FAULT {link_down?, rate_bps?, qber?}`` -> ``DeviceState``. ``FAULT`` is the
  simulated device's test hook (link down, rate change, QBER); a hardware device has none.

When the device answers ``PEER_NOT_CONNECTED`` (OPEN_CONNECT 1, GET_KEY 3), or refuses an
OPEN_CONNECT, it also lists, in ``peer_key_stream_IDs``, the key streams the peer end has open
that this end has not. A device
pair knows them (the two devices agree on every stream they generate key for, which is how a
device can say "peer not connected" at all); telling the application lets two QKDMs that
lost track of each other (one was down while the stream had to be replaced) find the stream
the other one is waiting on. See ``docs/key-streams.md``.
"""

from __future__ import annotations

import base64
import binascii
from enum import IntEnum
from typing import Annotated, Any, Final, Literal

import pydantic_core
from pydantic import Field, StringConstraints, TypeAdapter, ValidationError

from qss_api.wire import BadMessage, WireModel, problems_of

MAX_CHUNK_BYTES: Final = 65_536
# Material in one GET_KEY reply: a line of about 1.4 MB, parsed in about a millisecond.
MAX_RUN_BYTES: Final = 1 << 20
MAX_RUN_CHUNKS: Final = MAX_RUN_BYTES  # a run of 1-byte chunks is the longest
# Longest GET_KEY wait a client can ask for (QoS timeout, ms); keeps a connection from hanging.
MAX_TIMEOUT_MS: Final = 60_000
MAX_ID_LENGTH: Final = 256
MAX_INDEX: Final = 2**63 - 1
# A request is a small JSON object; a device refuses longer lines.
MAX_REQUEST_LINE: Final = 64 * 1024
# A reply carries at most MAX_RUN_BYTES of material in base64, plus a little.
MAX_REPLY_LINE: Final = 2 * MAX_RUN_BYTES


class Status(IntEnum):
    """ETSI GS QKD 004 status codes, and -1 (not ETSI) for a request that could not be read."""

    BAD_REQUEST = -1
    SUCCESS = 0
    PEER_NOT_CONNECTED = 1
    INSUFFICIENT_KEY = 2
    GET_KEY_PEER_NOT_CONNECTED = 3
    NO_QKD_CONNECTION = 4
    KSID_IN_USE = 5
    TIMEOUT = 6
    QOS_NOT_MET = 7
    METADATA_SIZE_INSUFFICIENT = 8


class Reason:
    """The reason words of refusals (several share one status code)."""

    BAD_REQUEST: Final = "bad_request"
    INTERNAL_ERROR: Final = "internal_error"
    NOT_YET: Final = "not_yet"  # 2: the chunk has not been generated yet
    EXPIRED: Final = "expired"  # 2: the chunk is no longer held
    TIMEOUT: Final = "timeout"  # 6
    PEER_NOT_CONNECTED: Final = "peer_not_connected"  # 3
    LINK_DOWN: Final = "link_down"  # 4
    QBER_TOO_HIGH: Final = "qber_too_high"  # 4
    ABORTED: Final = "aborted"  # 4: the stream was aborted (QBER); close it, open another
    UNKNOWN_KSID: Final = "unknown_ksid"  # 4: the stream is not open at this end
    KSID_IN_USE: Final = "ksid_in_use"  # 5: open at this end already
    KSID_RETIRED: Final = "ksid_retired"  # 5: closed at both ends; never reopened
    KSID_ABORTED: Final = "ksid_aborted"  # 5: the peer end's stream was aborted
    RATE_UNAVAILABLE: Final = "rate_unavailable"  # 7
    MIN_ABOVE_MAX: Final = "min_above_max"  # 7
    CHUNK_SIZE_MISMATCH: Final = "chunk_size_mismatch"  # 7
    METADATA_TOO_LARGE: Final = "metadata_too_large"  # 8


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
Index = Annotated[int, Field(ge=0, le=MAX_INDEX)]
NonNegative = Annotated[int, Field(ge=0, le=2**63 - 1)]
RequestId = int | Text | None


class QoS(WireModel):
    """ETSI GS QKD 004 QoS. ``key_chunk_size`` is in bytes; rates in bits/s; ``timeout`` in
    milliseconds (how long GET_KEY may wait for key); ``jitter``, ``priority`` and ``ttl`` are
    recorded and echoed."""

    key_chunk_size: Annotated[int, Field(ge=1, le=MAX_CHUNK_BYTES)] = 16
    max_bps: NonNegative = 0
    min_bps: NonNegative = 0
    jitter: NonNegative = 0
    priority: NonNegative = 0
    timeout: Annotated[int, Field(ge=0, le=MAX_TIMEOUT_MS)] = 0
    ttl: NonNegative = 0


# -- requests --------------------------------------------------------------------------------


class OpenConnect(WireModel):
    op: Literal["OPEN_CONNECT"] = "OPEN_CONNECT"
    id: RequestId = None
    source: Text
    destination: Text
    qos: QoS | None = None
    key_stream_ID: Text | None = None


class GetKey(WireModel):
    op: Literal["GET_KEY"] = "GET_KEY"
    id: RequestId = None
    key_stream_ID: Text
    index: Index | None = None
    count: Annotated[int, Field(ge=1, le=MAX_RUN_CHUNKS)] | None = None
    metadata_size: NonNegative | None = None


class Close(WireModel):
    op: Literal["CLOSE"] = "CLOSE"
    id: RequestId = None
    key_stream_ID: Text


class Health(WireModel):
    op: Literal["HEALTH"] = "HEALTH"
    id: RequestId = None


class Fault(WireModel):
    op: Literal["FAULT"] = "FAULT"
    id: RequestId = None
    link_down: bool | None = None
    rate_bps: NonNegative | None = None
    qber: Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)] | None = None


Request = OpenConnect | GetKey | Close | Health | Fault
_REQUEST: Final[TypeAdapter[Request]] = TypeAdapter(Annotated[Request, Field(discriminator="op")])


def decode_request(line: bytes) -> Request:
    """One request line as a typed request; ``BadMessage`` saying what is wrong otherwise."""
    try:
        return _REQUEST.validate_json(line)
    except ValidationError as exc:
        problems = problems_of(exc)
        for problem in problems:
            if problem["error"].startswith("Unable to extract tag"):
                problem["error"] = "the request needs an 'op'"
        raise BadMessage("device request", problems) from None


def encode(message: WireModel) -> bytes:
    """One line: the message as JSON (unset optional fields left out) and a newline."""
    return message.model_dump_json(exclude_none=True).encode() + b"\n"


# -- replies ---------------------------------------------------------------------------------


class Refusal(WireModel):
    """Any non-zero status. The optional fields are the details some refusals carry."""

    status: Literal[-1, 1, 2, 3, 4, 5, 6, 7, 8]
    reason: str
    message: str
    id: RequestId = None
    oldest_index: Index | None = None  # 2, 6: the oldest chunk still held
    next_index: Index | None = None  # 2, 6: the number of chunks generated so far
    device_bps: NonNegative | None = None  # 7: the device's secret key rate
    free_bps: NonNegative | None = None  # 7: the rate not taken by other streams
    metadata_size: NonNegative | None = None  # 8: the metadata size needed
    peer_key_stream_IDs: list[Text] | None = None  # 3, OPEN_CONNECT: see the module docstring


class Opened(WireModel):
    status: Literal[0, 1]
    id: RequestId = None
    key_stream_ID: Text
    qos: QoS
    peer_key_stream_IDs: list[Text] | None = None  # with status 1: see the module docstring


class Metadata(WireModel):
    qber: float
    rate_bps: NonNegative


class Keys(WireModel):
    status: Literal[0]
    id: RequestId = None
    index: Index
    count: Annotated[int, Field(ge=1, le=MAX_RUN_CHUNKS)] = 1
    key_buffer: str = Field(repr=False)  # base64 of count chunks, concatenated
    metadata: Metadata

    def material(self) -> bytes:
        """The key material, checked to be base64; ``BadMessage`` otherwise."""
        try:
            return base64.b64decode(self.key_buffer, validate=True)
        except (binascii.Error, ValueError):
            raise BadMessage(
                "GET_KEY reply", [{"parameter": "key_buffer", "error": "not base64"}]
            ) from None


def encode_keys(
    *, index: int, count: int, material: bytes, metadata: Metadata, id: RequestId = None
) -> bytes:
    """``encode(Keys(...))`` of a GET_KEY reply carrying ``material``, byte for byte, built
    around the base64 bytes: a device serving 100 Mbit/s and more would otherwise spend most of
    its time turning them into text and having the JSON encoder scan that text again (base64
    needs no escaping)."""
    request_id = b"" if id is None else b'"id":' + pydantic_core.to_json(id) + b","
    return b"".join(
        (
            b'{"status":0,',
            request_id,
            b'"index":%d,"count":%d,"key_buffer":"' % (index, count),
            binascii.b2a_base64(material, newline=False),
            b'","metadata":',
            metadata.model_dump_json().encode(),
            b"}\n",
        )
    )


class Closed(WireModel):
    status: Literal[0]
    id: RequestId = None


class StreamState(WireModel):
    key_stream_ID: Text
    rate_bps: NonNegative
    peer_connected: bool
    aborted: bool


class DeviceState(WireModel):
    """HEALTH and FAULT: healthy means link up and QBER at most the threshold."""

    status: Literal[0]
    id: RequestId = None
    healthy: bool
    end: Literal["A", "B"]
    link_up: bool
    rate_bps: NonNegative
    qber: float
    qber_threshold: float
    streams: list[StreamState]


Reply = Opened | Keys | Closed | DeviceState | Refusal

_REPLIES: Final[dict[str, TypeAdapter[Any]]] = {
    "OPEN_CONNECT": TypeAdapter(Opened | Refusal),
    "GET_KEY": TypeAdapter(Keys | Refusal),
    "CLOSE": TypeAdapter(Closed | Refusal),
    "HEALTH": TypeAdapter(DeviceState | Refusal),
    "FAULT": TypeAdapter(DeviceState | Refusal),
}


def decode_reply(op: str, line: bytes) -> Reply:
    """The reply to a request of ``op``, typed; ``BadMessage`` if it is not one."""
    try:
        reply: Reply = _REPLIES[op].validate_json(line, strict=True)
    except ValidationError as exc:
        raise BadMessage(f"{op} reply", problems_of(exc)) from None
    return reply


def refusal(status: Status, reason: str, message: str, **details: Any) -> Refusal:
    """A refusal reply (devices build them; details are ``Refusal``'s optional fields)."""
    return Refusal.model_validate(
        {"status": int(status), "reason": reason, "message": message, **details}
    )
