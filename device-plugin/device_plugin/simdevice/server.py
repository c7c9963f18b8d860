"""The Unix-socket servers of a simulated device pair: one socket per end.

``main`` starts one ``EndServer`` per end; each reads newline-delimited JSON requests and
answers each with one line from its ``protocol.Device``. Streams belong to the device, not to a
connection: a client that reconnects (a restarted QKDM) carries on with its key stream IDs.
Requests on one connection are answered in order; connections are served concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path

from device_plugin.simdevice.protocol import Device, bad_request
from qss_api.qkd004 import MAX_REQUEST_LINE, encode

log = logging.getLogger(__name__)

# Longest request line; a request is a small JSON object.
MAX_LINE = MAX_REQUEST_LINE


class SocketInUseError(RuntimeError):
    pass


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file left by a process that died; refuse one that still answers."""
    if not path.exists() and not path.is_symlink():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise SocketInUseError(f"another process is listening on {path}; stop it or pick another path")


class EndServer:
    def __init__(self, *, path: Path, device: Device) -> None:
        self.path = path
        self._device = device
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        _clear_stale_socket(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        # Only the owner and its group (the QKDM, the device plugin) may talk to the device.
        os.chmod(self.path, 0o660)
        log.info("end %s listening on %s", self._device.end, self.path)

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is None:
            # Never started (e.g. its socket belongs to a live device): leave the path alone.
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:
                    # Longer than MAX_LINE: we cannot find where the next request starts.
                    refusal = bad_request(
                        f"request line longer than {MAX_LINE} bytes; closing the connection"
                    )
                    writer.write(encode(refusal))
                    await writer.drain()
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                writer.write(await self._device.handle_line(line))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
