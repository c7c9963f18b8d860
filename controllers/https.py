"""Serving an aiohttp app over HTTPS on one address: what the inter-node channel and the ETSI
014 key API share (``ChannelServer``, ``Etsi014Server`` build on ``HttpsServer``).
"""

from __future__ import annotations

import logging
import ssl
from types import TracebackType
from typing import Self

from aiohttp import web

log = logging.getLogger(__name__)


class HttpsServer:
    """Serves ``app`` with ``ssl_context`` on ``host:port`` (port 0: any free port)."""

    what = "HTTPS server"  # for the log line; subclasses name themselves

    def __init__(
        self,
        app: web.Application,
        *,
        ssl_context: ssl.SSLContext,
        host: str,
        port: int,
        shutdown_timeout: float,
        handler_cancellation: bool = False,
    ) -> None:
        self.app, self.host, self._port = app, host, port
        self.ssl_context = ssl_context
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=shutdown_timeout,
            handler_cancellation=handler_cancellation,
        )

    @property
    def port(self) -> int:
        """The port actually bound (known after ``start``)."""
        return self._port

    @property
    def url(self) -> str:
        """The server's URL on a loopback-friendly host (for QKDLinks, tests, local clients)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"https://{host}:{self._port}"

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self._port = int(self._runner.addresses[0][1])
        log.info("%s listening on %s:%d", self.what, self.host, self._port)

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
