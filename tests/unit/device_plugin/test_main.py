"""The ``qss-device-plugin`` program as a process: bad configuration, SIGTERM, a real registration.

Runs the installed console script when the venv has it, else ``python -m device_plugin`` (the
same ``main``), so the test works before the package is reinstalled.
"""

import asyncio
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from device_plugin.config import DeviceConfig, DeviceEntry, DeviceKind, Settings
from device_plugin.main import parse_settings
from tests.metrics import parse
from tests.unit.device_plugin.harness import SOON, StubKubelet, fast_settings, start_plugin
from tests.waiting import eventually_async

SCRIPT = Path(sys.executable).parent / "qss-device-plugin"


def command() -> list[str]:
    if SCRIPT.exists():
        return [str(SCRIPT)]
    return [sys.executable, "-m", "device_plugin"]


async def run_to_end(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    # A guard against a hang, not a time limit: importing grpc alone takes seconds on a busy node.
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("devices: [\n", "is not valid YAML at line 2"),
        (
            "devices:\n  - {id: a, kind: laser, path: /dev/a, link: a-b}\n",
            "devices[0].kind must be 'simulated' or 'hardware', got 'laser'",
        ),
        ("hello\n", "must be a mapping"),
    ],
)
async def test_malformed_config_is_one_clear_line_and_exit_2_without_traceback(
    short_tmp: Path, text: str, expected: str
) -> None:
    config = short_tmp / "devices.yaml"
    config.write_text(text)

    code, stderr = await run_to_end("--config", str(config))

    assert code == 2
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"qss-device-plugin: error: device config {config}")
    assert expected in stderr
    assert "Traceback" not in stderr


async def test_missing_config_file_is_one_clear_line_and_exit_2(short_tmp: Path) -> None:
    code, stderr = await run_to_end("--config", str(short_tmp / "nope.yaml"))

    assert code == 2
    assert stderr.splitlines() == [
        f"qss-device-plugin: error: cannot read device config {short_tmp / 'nope.yaml'}: "
        "No such file or directory; mount the ConfigMap there or pass --config"
    ]


async def test_bad_resource_prefix_is_a_usage_error(short_tmp: Path) -> None:
    code, stderr = await run_to_end("--resource-prefix", "qkd")
    assert code == 2
    assert "--resource-prefix 'qkd' is not '<domain>/<name>'" in stderr
    assert "Traceback" not in stderr


async def test_a_link_that_cannot_name_a_resource_is_one_clear_line_and_exit_2(
    short_tmp: Path,
) -> None:
    config = short_tmp / "devices.yaml"
    long_link = "l" * 60
    config.write_text(
        f"devices:\n  - {{id: q0, kind: hardware, path: /dev/null, link: {long_link}}}\n"
    )

    code, stderr = await run_to_end("--config", str(config))

    assert code == 2
    (line,) = stderr.splitlines()
    assert line.startswith(f"qss-device-plugin: error: device config: link '{long_link}' gives")
    assert "within 63 characters" in line


async def test_program_registers_with_the_kubelet_and_exits_0_on_sigterm(
    kubelet: StubKubelet, socket_dir: Path, short_tmp: Path
) -> None:
    config = short_tmp / "devices.yaml"
    config.write_text("devices:\n  - {id: null0, kind: hardware, path: /dev/null, link: a-b}\n")
    process = await asyncio.create_subprocess_exec(
        *command(),
        "--config",
        str(config),
        "--device-plugin-dir",
        str(socket_dir),
        "--socket-poll-interval",
        "0.05",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        registration = await kubelet.next_registration(within=120)  # a new process: imports grpc
        assert registration.request.resource_name == "qss.dev/qkd-a-b"
        assert (socket_dir / "qss-qkd-a-b.sock").is_socket()

        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), SOON)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, stderr.decode()
    assert not (socket_dir / "qss-qkd-a-b.sock").exists()
    assert "Traceback" not in stderr.decode()


def test_the_console_script_is_declared() -> None:
    pyproject = (Path(__file__).parents[3] / "pyproject.toml").read_text()
    assert 'qss-device-plugin = "device_plugin.main:main"' in pyproject


def test_command_line_becomes_settings_with_the_kubelet_socket_beside_the_plugin_dir() -> None:
    settings = parse_settings(
        [
            "--device-plugin-dir",
            "/tmp/kp",
            "--resource-prefix",
            "example.com/qkd",
            "--host-root",
            "/h",
        ]
    )
    assert settings.kubelet_socket == Path("/tmp/kp/kubelet.sock")
    assert settings.resource_prefix == "example.com/qkd"
    assert settings.host_root == Path("/h")
    assert parse_settings([]) == Settings()


@pytest.mark.parametrize(
    "argv",
    [
        ["--health-interval", "0"],
        ["--socket-prefix", "a/b"],
        ["--metrics-address", "9410"],
        ["--resource-prefix", "Qss.dev/qkd"],
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_settings(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


async def test_serve_answers_metrics_on_the_metrics_address(
    kubelet: StubKubelet, socket_dir: Path, short_tmp: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = fast_settings(
        socket_dir=socket_dir, host_root=Path("/"), metrics_address=f"127.0.0.1:{port}"
    )
    entry = DeviceEntry(id="null0", kind=DeviceKind.HARDWARE, path="/dev/null", link="a-b")
    plugin = await start_plugin(settings, DeviceConfig(devices=(entry,), discover=()))
    try:
        await kubelet.next_registration()
        url = f"http://127.0.0.1:{port}/metrics"
        registered = 'qss_device_plugin_registered{resource="qss.dev/qkd-a-b"} 1'

        async def shows_registered() -> str | None:
            # The kubelet sees the registration before the plugin's Register call returns.
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                text = await response.text()
            return text if registered in text else None

        text = await eventually_async(shows_registered, timeout=10, what="registered in /metrics")
        page = parse(text)
        assert page.value("qss_device_plugin_registered", resource="qss.dev/qkd-a-b") == 1
        assert page.value("qss_device_plugin_registrations_total") == 1
    finally:
        await plugin.stop()
