"""The plugin against a stub kubelet, over real Unix sockets and real grpc.aio.

Registration (and the kubelet's dial-back), ListAndWatch updates when health changes and silence
when it does not, Allocate and GetPreferredAllocation, and re-registration after a kubelet restart.
"""

import asyncio
import itertools
import socket
from pathlib import Path

import grpc
import pytest

from device_plugin.api import HEALTHY, UNHEALTHY, VERSION, pb
from device_plugin.config import DeviceConfig, DeviceEntry, DeviceKind, DiscoveryRule
from qss_api import RESOURCE_QKD_DEVICE, qkd_resource
from tests.metrics import scrape
from tests.unit.device_plugin.harness import (
    SOON,
    Connect,
    RunPlugin,
    SimDeviceFactory,
    StubKubelet,
)


def sim(device_id: str, link: str) -> DeviceEntry:
    return DeviceEntry(
        id=device_id, kind=DeviceKind.SIMULATED, path=f"/run/qss/{device_id}.sock", link=link
    )


def hardware(device_id: str, link: str) -> DeviceEntry:
    return DeviceEntry(id=device_id, kind=DeviceKind.HARDWARE, path=f"/dev/{device_id}", link=link)


def config(*devices: DeviceEntry, discover: tuple[DiscoveryRule, ...] = ()) -> DeviceConfig:
    return DeviceConfig(devices=devices, discover=discover)


def allocate_request(*containers: list[str]) -> object:
    return pb.AllocateRequest(
        container_requests=[pb.ContainerAllocateRequest(devices_ids=ids) for ids in containers]
    )


async def test_plugin_registers_with_version_endpoint_resource_and_options_after_serving(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory
) -> None:
    await sim_device("qkd-a")
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob")))

    registration = await kubelet.next_registration()

    request = registration.request
    assert request.version == VERSION == "v1beta1"
    assert request.endpoint == "qss-qkd-alice-bob.sock"
    assert request.resource_name == qkd_resource("alice-bob") == "qss.dev/qkd-alice-bob"
    assert request.options.get_preferred_allocation_available is True
    assert request.options.pre_start_required is False
    # The stub kubelet dialled the plugin's socket back before answering, as the kubelet does.
    assert registration.options_on_dial_back == request.options
    assert plugin.socket_path.is_socket()


async def test_resource_and_socket_prefixes_are_configurable(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory
) -> None:
    await sim_device("qkd-a")
    await run_plugin(
        config(sim("qkd-a", "alice-bob")), resource_prefix="example.com/qkd", socket_prefix="lab"
    )

    request = (await kubelet.next_registration()).request

    assert (request.resource_name, request.endpoint) == (
        "example.com/qkd-alice-bob",
        "lab-alice-bob.sock",
    )


async def test_each_link_is_its_own_resource_on_its_own_socket_with_only_its_devices(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory, connect: Connect
) -> None:
    for name in ("qkd-b1", "qkd-b2", "qkd-c"):
        await sim_device(name)
    rule = DiscoveryRule(pattern="/dev/qkd*", kind=DeviceKind.HARDWARE, link="")
    plugin = await run_plugin(
        config(
            sim("qkd-b1", "node-b"),
            sim("qkd-b2", "node-b"),
            sim("qkd-c", "node-c"),
            discover=(rule,),
        )
    )

    registered = {(await kubelet.next_registration()).request.resource_name for _ in range(3)}

    assert registered == {"qss.dev/qkd-node-b", "qss.dev/qkd-node-c", RESOURCE_QKD_DEVICE}
    to_b, to_c = connect(plugin.socket_for("node-b")), connect(plugin.socket_for("node-c"))
    to_b.watch()
    to_c.watch()
    assert await to_b.next_update() == [("qkd-b1", HEALTHY), ("qkd-b2", HEALTHY)]
    assert await to_c.next_update() == [("qkd-c", HEALTHY)]
    # A pod that asked for node-c's resource cannot be handed node-b's device.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await to_c.stub.Allocate(allocate_request(["qkd-b1"]), timeout=SOON)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "it offers qkd-c" in str(caught.value.details())
    response = await to_c.stub.Allocate(allocate_request(["qkd-c"]), timeout=SOON)
    assert response.container_responses[0].envs["QSS_QKD_LINK"] == "node-c"


async def test_list_and_watch_sends_the_list_then_only_changes_of_simulated_device_health(
    kubelet: StubKubelet,
    run_plugin: RunPlugin,
    sim_device: SimDeviceFactory,
    connect: Connect,
) -> None:
    device_a = await sim_device("qkd-a")
    await sim_device("qkd-b")
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob"), sim("qkd-b", "alice-bob")))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)
    client.watch()

    assert await client.next_update() == [("qkd-a", HEALTHY), ("qkd-b", HEALTHY)]
    # Ten health rounds with nothing changed: nothing is sent.
    await client.assert_no_update(within=10 * plugin.settings.health_interval)

    device_a.healthy = False  # the device says so itself (e.g. QBER above threshold)
    assert await client.next_update() == [("qkd-a", UNHEALTHY), ("qkd-b", HEALTHY)]
    await client.assert_no_update(within=5 * plugin.settings.health_interval)

    device_a.healthy = True
    assert await client.next_update() == [("qkd-a", HEALTHY), ("qkd-b", HEALTHY)]


async def test_a_simulated_device_that_goes_away_turns_unhealthy_and_recovers_when_back(
    kubelet: StubKubelet,
    run_plugin: RunPlugin,
    sim_device: SimDeviceFactory,
    connect: Connect,
) -> None:
    device = await sim_device("qkd-a")
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob")))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)
    client.watch()
    assert await client.next_update() == [("qkd-a", HEALTHY)]

    await device.stop()
    assert await client.next_update() == [("qkd-a", UNHEALTHY)]

    await device.start()
    assert await client.next_update() == [("qkd-a", HEALTHY)]


async def test_a_hardware_node_that_is_removed_turns_unhealthy_and_recovers(
    kubelet: StubKubelet, run_plugin: RunPlugin, connect: Connect, host_root: Path
) -> None:
    node = host_root / "dev" / "qkd0"
    node.parent.mkdir(parents=True)
    node.write_bytes(b"")
    plugin = await run_plugin(config(hardware("qkd0", "alice-bob")))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)
    client.watch()
    assert await client.next_update() == [("qkd0", HEALTHY)]

    node.unlink()
    assert await client.next_update() == [("qkd0", UNHEALTHY)]

    node.write_bytes(b"")
    assert await client.next_update() == [("qkd0", HEALTHY)]


async def test_device_nodes_matching_the_pattern_come_and_go_from_the_list(
    kubelet: StubKubelet, run_plugin: RunPlugin, connect: Connect, host_root: Path
) -> None:
    (host_root / "dev").mkdir()
    (host_root / "dev" / "qkd0").write_bytes(b"")
    rule = DiscoveryRule(pattern="/dev/qkd*", kind=DeviceKind.HARDWARE, link="alice-bob")
    plugin = await run_plugin(config(discover=(rule,)))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)
    client.watch()
    assert await client.next_update() == [("qkd0", HEALTHY)]

    (host_root / "dev" / "qkd1").write_bytes(b"")
    assert await client.next_update() == [("qkd0", HEALTHY), ("qkd1", HEALTHY)]

    (host_root / "dev" / "qkd0").unlink()
    assert await client.next_update() == [("qkd1", HEALTHY)]


async def test_allocate_a_simulated_device_mounts_its_socket_and_sets_the_qkdm_environment(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory, connect: Connect
) -> None:
    await sim_device("qkd-a")
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob")))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)

    response = await client.stub.Allocate(allocate_request(["qkd-a"]), timeout=SOON)

    (container,) = response.container_responses
    assert dict(container.envs) == {
        "QSS_QKD_DEVICE_ID": "qkd-a",
        "QSS_QKD_DEVICE_KIND": "simulated",
        "QSS_QKD_DEVICE_PATH": "/var/run/qss/qkd-device.sock",
        "QSS_QKD_LINK": "alice-bob",
        "QSS_QKD_DEVICE_IDS": "qkd-a",
    }
    (mount,) = container.mounts
    # The kubelet gets the host path, not where the plugin itself sees the socket.
    assert mount.host_path == "/run/qss/qkd-a.sock"
    assert mount.container_path == "/var/run/qss/qkd-device.sock"
    assert mount.read_only is True
    assert list(container.devices) == []


async def test_allocate_a_hardware_device_hands_over_its_node_and_environment(
    kubelet: StubKubelet, run_plugin: RunPlugin, connect: Connect, host_root: Path
) -> None:
    (host_root / "dev").mkdir()
    (host_root / "dev" / "qkd0").write_bytes(b"")
    plugin = await run_plugin(config(hardware("qkd0", "alice-carol")))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)

    response = await client.stub.Allocate(allocate_request(["qkd0"]), timeout=SOON)

    (container,) = response.container_responses
    (spec,) = container.devices
    assert (spec.host_path, spec.container_path, spec.permissions) == (
        "/dev/qkd0",
        "/dev/qkd0",
        "rw",
    )
    assert list(container.mounts) == []
    assert container.envs["QSS_QKD_DEVICE_PATH"] == "/dev/qkd0"
    assert container.envs["QSS_QKD_DEVICE_KIND"] == "hardware"
    assert container.envs["QSS_QKD_LINK"] == "alice-carol"


async def test_allocate_answers_each_container_of_the_request(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory, connect: Connect
) -> None:
    await sim_device("qkd-a")
    await sim_device("qkd-b")
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob"), sim("qkd-b", "alice-bob")))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)

    response = await client.stub.Allocate(allocate_request(["qkd-b"], ["qkd-a"]), timeout=SOON)

    assert [c.envs["QSS_QKD_DEVICE_ID"] for c in response.container_responses] == ["qkd-b", "qkd-a"]


async def test_allocate_of_an_unknown_device_is_invalid_argument_naming_it(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory, connect: Connect
) -> None:
    await sim_device("qkd-a")
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob")))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.Allocate(allocate_request(["qkd-a", "qkd-nope"]), timeout=SOON)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'qkd-nope' is not offered by this plugin" in str(caught.value.details())


async def test_allocate_of_an_unhealthy_device_is_failed_precondition_naming_it(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory, connect: Connect
) -> None:
    device = await sim_device("qkd-a")
    device.healthy = False
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob")))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.Allocate(allocate_request(["qkd-a"]), timeout=SOON)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'qkd-a' is unhealthy" in str(caught.value.details())


async def test_preferred_allocation_keeps_must_include_devices_and_fills_with_healthy_ones(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory, connect: Connect
) -> None:
    for name in ("qkd-a", "qkd-b", "qkd-c"):
        await sim_device(name)
    (await sim_device("qkd-d")).healthy = False
    entries = [sim(n, "alice-bob") for n in ("qkd-a", "qkd-b", "qkd-c", "qkd-d")]
    plugin = await run_plugin(config(*entries))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)
    request = pb.PreferredAllocationRequest(
        container_requests=[
            pb.ContainerPreferredAllocationRequest(
                available_deviceIDs=["qkd-d", "qkd-c", "qkd-b", "qkd-a"],
                must_include_deviceIDs=["qkd-c"],
                allocation_size=2,
            ),
            pb.ContainerPreferredAllocationRequest(
                available_deviceIDs=["qkd-d", "qkd-b"],
                must_include_deviceIDs=["qkd-d"],
                allocation_size=1,
            ),
        ]
    )

    response = await client.stub.GetPreferredAllocation(request, timeout=SOON)

    assert [list(c.deviceIDs) for c in response.container_responses] == [
        ["qkd-c", "qkd-a"],
        ["qkd-d"],
    ]


async def test_pre_start_container_and_options_answer(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory, connect: Connect
) -> None:
    await sim_device("qkd-a")
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob")))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)

    options = await client.stub.GetDevicePluginOptions(pb.Empty(), timeout=SOON)
    answer = await client.stub.PreStartContainer(
        pb.PreStartContainerRequest(devices_ids=["qkd-a"]), timeout=SOON
    )

    assert options.get_preferred_allocation_available is True
    assert answer == pb.PreStartContainerResponse()


async def test_deleting_the_plugin_socket_leads_to_a_new_registration_on_a_new_socket(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory, connect: Connect
) -> None:
    await sim_device("qkd-a")
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob")))
    await kubelet.next_registration()

    plugin.socket_path.unlink()

    again = await kubelet.next_registration()
    assert again.request.endpoint == "qss-qkd-alice-bob.sock"
    assert plugin.socket_path.is_socket()
    client = connect(plugin.socket_path)
    client.watch()
    assert await client.next_update() == [("qkd-a", HEALTHY)]


async def test_a_kubelet_restart_leads_to_a_new_registration(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory
) -> None:
    await sim_device("qkd-a")
    await run_plugin(config(sim("qkd-a", "alice-bob")))
    await kubelet.next_registration()

    await kubelet.restart()

    again = await kubelet.next_registration()
    assert again.request.resource_name == "qss.dev/qkd-alice-bob"


async def test_registration_is_retried_with_backoff_until_the_kubelet_accepts(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory
) -> None:
    await sim_device("qkd-a")
    kubelet.refuse_with = "resource name qss.dev/qkd-alice-bob is already registered"
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob")))
    settings = plugin.settings

    # The refused attempts themselves, as the kubelet saw them arrive.
    async with asyncio.timeout(SOON):
        attempts = [await kubelet.attempts.get() for _ in range(5)]
    assert kubelet.registrations.empty()  # none was accepted
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    for i, gap in enumerate(gaps):
        # Each wait is at least the backoff, which doubles up to its maximum (less a little for
        # the loop clock's resolution; waits are never shorter than asked).
        expected = min(settings.backoff_initial * 2**i, settings.backoff_max)
        assert gap >= 0.9 * expected, (i, gaps)
    assert gaps[-1] >= 2 * settings.backoff_initial

    kubelet.refuse_with = None

    await kubelet.next_registration()


async def test_plugin_waits_for_a_kubelet_that_is_not_there_yet(
    socket_dir: Path, run_plugin: RunPlugin, sim_device: SimDeviceFactory
) -> None:
    await sim_device("qkd-a")
    await run_plugin(config(sim("qkd-a", "alice-bob")))
    await asyncio.sleep(0.2)
    late_kubelet = StubKubelet(directory=socket_dir)
    await late_kubelet.start()
    try:
        registration = await late_kubelet.next_registration()
        assert registration.request.version == "v1beta1"
    finally:
        await late_kubelet.stop()


async def test_stopping_the_plugin_removes_its_socket(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory, connect: Connect
) -> None:
    await sim_device("qkd-a")
    plugin = await run_plugin(config(sim("qkd-a", "alice-bob")))
    await kubelet.next_registration()
    client = connect(plugin.socket_path)
    client.watch()
    await client.next_update()

    await plugin.stop()

    assert plugin.task.done()
    assert plugin.task.exception() is None
    assert not plugin.socket_path.exists()


async def test_metrics_count_allocations_refusals_registration_and_device_health(
    kubelet: StubKubelet, run_plugin: RunPlugin, sim_device: SimDeviceFactory, connect: Connect
) -> None:
    await sim_device("qkd-a")
    sick = await sim_device("qkd-b")
    sick.healthy = False
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plugin = await run_plugin(
        config(sim("qkd-a", "alice-bob"), sim("qkd-b", "alice-bob")),
        metrics_address=f"127.0.0.1:{port}",
    )
    await kubelet.next_registration()
    client = connect(plugin.socket_path)
    await client.stub.Allocate(allocate_request(["qkd-a"], ["qkd-a"]), timeout=SOON)
    with pytest.raises(grpc.aio.AioRpcError):
        await client.stub.Allocate(allocate_request(["qkd-b"]), timeout=SOON)

    page = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")

    assert page.value("qss_device_plugin_allocations_total") == 2  # one per container
    assert page.value("qss_device_plugin_allocation_errors_total") == 1
    assert page.value("qss_device_plugin_registrations_total") == 1
    assert page.value("qss_device_plugin_registered", resource="qss.dev/qkd-alice-bob") == 1
    assert page.value("qss_device_plugin_device_healthy", device="qkd-a", link="alice-bob") == 1
    assert page.value("qss_device_plugin_device_healthy", device="qkd-b", link="alice-bob") == 0
