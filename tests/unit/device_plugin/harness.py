"""Real parts for the device plugin tests: a stub kubelet, a fake simulated device, the plugin.

Everything talks over real Unix sockets in a short temporary directory under /tmp (socket paths
must stay under ~100 characters). The stub kubelet speaks the same ``deviceplugin.proto`` as the
plugin and, like the real kubelet, dials the plugin back before it answers Register. The fake
simulated device speaks the simulated device's health protocol (one JSON line in, one out); it is
not the simulated device itself, only enough of it to switch health on and off.

Used by ``conftest.py`` (fixtures) and the test modules beside it.
"""

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from device_plugin.api import add_registration_servicer, device_plugin_stub, pb
from device_plugin.config import DeviceConfig, Settings
from device_plugin.main import serve
from device_plugin.resources import resources_for
from qss_api.qkd004 import DeviceState, Status, encode, refusal

# Generous bounds for "soon": far above the intervals below, far below a slow test.
SOON = 3.0


class FakeSimDevice:
    """A Unix-socket server answering HEALTH (``qss_api.qkd004``) with ``healthy`` as set."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.healthy = True
        self.raw_answer: bytes | None = None  # when set, sent instead of the JSON answer
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_unix_server(self._handle, path=self.socket_path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        self.socket_path.unlink(missing_ok=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while line := await reader.readline():
                request = json.loads(line)
                if request.get("op") != "HEALTH":
                    answer = encode(refusal(Status.BAD_REQUEST, "bad_request", "unknown op"))
                elif self.raw_answer is not None:
                    answer = self.raw_answer
                else:
                    answer = encode(
                        DeviceState(
                            status=0,
                            healthy=self.healthy,
                            end="A",
                            link_up=self.healthy,
                            rate_bps=1000,
                            qber=0.01,
                            qber_threshold=0.11,
                            streams=[],
                        )
                    )
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


@dataclass
class Registration:
    """One Register call the stub kubelet accepted, and the options it read on dialling back."""

    request: Any
    options_on_dial_back: Any


@dataclass
class StubKubelet:
    """The kubelet's Registration service on ``<dir>/kubelet.sock``; dials each plugin back."""

    directory: Path
    registrations: asyncio.Queue[Registration] = field(default_factory=asyncio.Queue)
    refuse_with: str | None = None  # when set, Register fails with this message
    # When each Register call arrived (loop time), refused or not.
    attempts: asyncio.Queue[float] = field(default_factory=asyncio.Queue)
    _server: Any = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "kubelet.sock"

    async def start(self) -> None:
        self._server = grpc.aio.server()
        add_registration_servicer(self, self._server)
        self._server.add_insecure_port(f"unix:{self.socket_path}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        self.socket_path.unlink(missing_ok=True)

    async def restart(self) -> None:
        """What a kubelet restart does to the directory: every socket in it is removed."""
        await self.stop()
        for path in self.directory.glob("*.sock"):
            path.unlink()
        await self.start()

    async def next_registration(self, within: float = SOON) -> Registration:
        return await asyncio.wait_for(self.registrations.get(), within)

    async def Register(self, request: Any, context: Any) -> Any:  # the Registration servicer
        self.attempts.put_nowait(asyncio.get_running_loop().time())
        if self.refuse_with is not None:
            await context.abort(grpc.StatusCode.UNKNOWN, self.refuse_with)
        # The real kubelet connects to the plugin before it answers; a plugin that registers
        # before serving fails here.
        async with grpc.aio.insecure_channel(f"unix:{self.directory / request.endpoint}") as ch:
            options = await device_plugin_stub(ch).GetDevicePluginOptions(pb.Empty(), timeout=SOON)
        self.registrations.put_nowait(Registration(request=request, options_on_dial_back=options))
        return pb.Empty()


class PluginClient:
    """A kubelet-side client of the plugin's socket, with ListAndWatch read into a queue."""

    def __init__(self, socket_path: Path) -> None:
        self._channel = grpc.aio.insecure_channel(f"unix:{socket_path}")
        self.stub = device_plugin_stub(self._channel)
        self.updates: asyncio.Queue[list[tuple[str, str]]] = asyncio.Queue()
        self._watch: Any = None
        self._reader: asyncio.Task[None] | None = None

    def watch(self) -> None:
        self._watch = self.stub.ListAndWatch(pb.Empty())
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            async for response in self._watch:
                self.updates.put_nowait([(d.ID, d.health) for d in response.devices])

    async def next_update(self, within: float = SOON) -> list[tuple[str, str]]:
        return await asyncio.wait_for(self.updates.get(), within)

    async def assert_no_update(self, within: float) -> None:
        await asyncio.sleep(within)
        assert self.updates.empty(), f"unexpected ListAndWatch update: {self.updates.get_nowait()}"

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._reader is not None:
            await self._reader
        await self._channel.close()


@dataclass
class RunningPlugin:
    """The plugin's :func:`serve` running as a task, with the settings it was given."""

    settings: Settings
    config: DeviceConfig
    task: asyncio.Task[None]
    stop_event: asyncio.Event

    def socket_for(self, link: str) -> Path:
        """The socket serving the resource of ``link``."""
        resources = resources_for(
            self.config,
            prefix=self.settings.resource_prefix,
            socket_prefix=self.settings.socket_prefix,
        )
        (resource,) = [r for r in resources if r.link == link]
        return self.settings.device_plugin_dir / resource.socket_name

    @property
    def socket_path(self) -> Path:
        """The socket of the only resource (the tests of one link)."""
        links = {e.link for e in self.config.devices} | {r.link for r in self.config.discover}
        (link,) = links
        return self.socket_for(link)

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(asyncio.shield(self.task), SOON)


def fast_settings(*, socket_dir: Path, host_root: Path, **overrides: Any) -> Settings:
    """Settings with intervals short enough for tests (a change shows within ~50 ms)."""
    settings = Settings(
        config_path=Path("/nonexistent"),  # tests hand the config to serve() directly
        device_plugin_dir=socket_dir,
        kubelet_socket=socket_dir / "kubelet.sock",
        host_root=host_root,
        health_interval=0.05,
        probe_timeout=0.5,
        socket_poll_interval=0.02,
        register_timeout=SOON,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    return replace(settings, **overrides)


async def start_plugin(settings: Settings, config: DeviceConfig) -> RunningPlugin:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, config, stop))
    return RunningPlugin(settings=settings, config=config, task=task, stop_event=stop)


# The factories conftest.py's fixtures hand to tests.
RunPlugin = Callable[..., Awaitable[RunningPlugin]]
SimDeviceFactory = Callable[[str], Awaitable[FakeSimDevice]]
Connect = Callable[[Path], PluginClient]
