"""Serving the plugin's socket and registering with the kubelet, again and again as needed.

``main`` runs one :class:`Lifecycle` per resource until SIGTERM. One round: start a gRPC server
with the resource's servicer on ``<device-plugins dir>/<its socket>``, then call the kubelet's
Registration.Register
(the kubelet dials our socket back before it answers, so we must be serving first), then poll the
two sockets. When the kubelet restarts it deletes every socket in the directory and creates a new
``kubelet.sock``; either sign ends the round, and the next round serves and registers again at
once. A round that fails (no kubelet yet, registration refused) is retried with exponential
backoff. The servicer knows none of this; it is the same object in every round.
"""

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import grpc

from device_plugin.api import VERSION, add_device_plugin_servicer, pb, registration_stub
from device_plugin.config import Settings
from device_plugin.metrics import Counters
from device_plugin.resources import Resource
from device_plugin.servicer import DevicePluginServicer, plugin_options

logger = logging.getLogger(__name__)

FileId = tuple[int, int, int]


class RegistrationError(Exception):
    """The kubelet could not be reached or refused our registration."""


class Lifecycle:
    """Serve, register, watch, repeat; :meth:`run` returns once ``stop`` is set."""

    def __init__(
        self,
        *,
        settings: Settings,
        resource: Resource,
        servicer: DevicePluginServicer,
        counters: Counters,
    ) -> None:
        self._settings = settings
        self._resource = resource
        self._servicer = servicer
        self._counters = counters

    @property
    def socket_path(self) -> Path:
        """Our socket, in the directory where the kubelet looks for plugins."""
        return self._settings.device_plugin_dir / self._resource.socket_name

    async def run(self, stop: asyncio.Event) -> None:
        """Run rounds until ``stop`` is set, backing off after failed rounds."""
        backoff = self._settings.backoff_initial
        while not stop.is_set():
            try:
                await self._round(stop)
            except Exception as exc:
                self._counters.registration_failures += 1
                logger.warning("%s; trying again in %.1fs", exc, backoff)
                if await _stopped_within(stop, backoff):
                    break
                backoff = min(backoff * 2, self._settings.backoff_max)
            else:
                # We were registered until the kubelet went away: start the next round afresh.
                backoff = self._settings.backoff_initial

    async def _round(self, stop: asyncio.Event) -> None:
        """Serve, register and watch until a socket changes or ``stop``; raise if that fails."""
        if not self._settings.kubelet_socket.exists():
            raise RegistrationError(
                f"the kubelet socket {self._settings.kubelet_socket} does not exist; the kubelet "
                "is not running or its device-plugins directory is not mounted"
            )
        server = grpc.aio.server()
        add_device_plugin_servicer(self._servicer, server)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a socket left by an earlier run of ours
        if not server.add_insecure_port(f"unix:{self.socket_path}"):
            raise RegistrationError(f"cannot listen on {self.socket_path}")
        await server.start()
        ours = _file_id(self.socket_path)
        try:
            kubelet = _file_id(self._settings.kubelet_socket)
            await self._register()
            self._counters.registrations += 1
            self._counters.registered.add(self._resource.name)
            logger.info(
                "registered %s with the kubelet at %s, serving on %s",
                self._resource.name,
                self._settings.kubelet_socket,
                self.socket_path,
            )
            reason = await self._watch(stop, ours=ours, kubelet=kubelet)
            if reason:
                logger.info("%s; serving and registering again", reason)
        finally:
            self._counters.registered.discard(self._resource.name)
            await server.stop(grace=None)
            if ours is not None and _file_id(self.socket_path) == ours:
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()

    async def _register(self) -> None:
        settings, resource = self._settings, self._resource
        request = pb.RegisterRequest(
            version=VERSION,
            endpoint=resource.socket_name,
            resource_name=resource.name,
            options=plugin_options(),
        )
        async with grpc.aio.insecure_channel(f"unix:{settings.kubelet_socket}") as channel:
            try:
                await registration_stub(channel).Register(
                    request, timeout=settings.register_timeout
                )
            except grpc.aio.AioRpcError as exc:
                raise RegistrationError(
                    f"registering {resource.name} with the kubelet at "
                    f"{settings.kubelet_socket} failed: {exc.code().name}: {exc.details()}"
                ) from None

    async def _watch(
        self, stop: asyncio.Event, *, ours: FileId | None, kubelet: FileId | None
    ) -> str | None:
        """Poll until a socket changes (return why) or ``stop`` is set (return None)."""
        interval = self._settings.socket_poll_interval
        while not await _stopped_within(stop, interval):
            if _file_id(self.socket_path) != ours:
                return f"our socket {self.socket_path} was removed (kubelet restart?)"
            now = _file_id(self._settings.kubelet_socket)
            if now is not None and now != kubelet:
                return f"the kubelet socket {self._settings.kubelet_socket} was recreated"
        return None


def _file_id(path: Path) -> FileId | None:
    """(device, inode, ctime) of ``path``, so a deleted-and-recreated file counts as changed.

    The ctime is there because a file system may hand the freed inode number straight to the new
    file; a spurious change only costs one extra registration.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``; return whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()
