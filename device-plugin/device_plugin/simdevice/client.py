"""A small async client for one end of a simulated device (tests, benchmarks, the demo).

Not used by the device itself. The QKDM lives in ``controllers`` and has its own client (the
components do not import each other); this one documents the wire format by example:
one JSON object per line each way, responses in request order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Response = dict[str, Any]


class DeviceClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, path: Path | str) -> DeviceClient:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=16 * 1024 * 1024)
        return cls(reader, writer)

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> DeviceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send_raw(self, line: bytes) -> Response:
        """Send ``line`` as it is (it must end in a newline) and read one response."""
        async with self._lock:
            self._writer.write(line)
            await self._writer.drain()
            return await self._read()

    async def request(self, payload: Mapping[str, Any]) -> Response:
        return (await self.pipeline([payload]))[0]

    async def pipeline(self, payloads: Sequence[Mapping[str, Any]]) -> list[Response]:
        """Send all requests, then read all responses (in the same order)."""
        async with self._lock:
            self._writer.write(b"".join(json.dumps(p).encode() + b"\n" for p in payloads))
            await self._writer.drain()
            return [await self._read() for _ in payloads]

    async def open_connect(
        self,
        *,
        source: str = "qkdm-a",
        destination: str = "qkdm-b",
        qos: Mapping[str, int] | None = None,
        key_stream_id: str | None = None,
    ) -> Response:
        payload: dict[str, Any] = {
            "op": "OPEN_CONNECT",
            "source": source,
            "destination": destination,
        }
        if qos is not None:
            payload["qos"] = dict(qos)
        if key_stream_id is not None:
            payload["key_stream_ID"] = key_stream_id
        return await self.request(payload)

    async def get_key(
        self, *, key_stream_id: str, index: int | None = None, metadata_size: int | None = None
    ) -> Response:
        payload: dict[str, Any] = {"op": "GET_KEY", "key_stream_ID": key_stream_id}
        if index is not None:
            payload["index"] = index
        if metadata_size is not None:
            payload["metadata_size"] = metadata_size
        return await self.request(payload)

    async def close_stream(self, *, key_stream_id: str) -> Response:
        return await self.request({"op": "CLOSE", "key_stream_ID": key_stream_id})

    async def health(self) -> Response:
        return await self.request({"op": "HEALTH"})

    async def fault(self, **faults: Any) -> Response:
        return await self.request({"op": "FAULT", **faults})

    async def _read(self) -> Response:
        line = await self._reader.readline()
        if not line:
            raise ConnectionError("the device closed the connection")
        response = json.loads(line)
        if not isinstance(response, dict):
            raise ValueError("the device answered something other than a JSON object")
        return response
