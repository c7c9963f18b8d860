"""The status codes of ETSI GS QKD 004 (plus one for malformed requests) and ``Refusal``.

Shared by ``link`` (which refuses) and ``protocol`` (which turns a refusal into a response).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Status(IntEnum):
    # Not an ETSI code: the request itself could not be understood (bad JSON, field, op).
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


class Refusal(Exception):
    """A request the device answers with a non-zero status.

    ``reason`` is a stable machine-readable word (several reasons share one ETSI code, e.g. 4
    for both "link down" and "unknown key stream"); ``details`` are extra response fields.
    """

    def __init__(self, status: Status, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details

    def response(self) -> dict[str, Any]:
        return {
            "status": int(self.status),
            "reason": self.reason,
            "message": self.message,
            **self.details,
        }
