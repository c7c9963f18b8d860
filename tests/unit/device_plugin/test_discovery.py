"""Device discovery: configured devices plus pattern matches under an injectable host root."""

from pathlib import Path

from device_plugin.config import DeviceConfig, DeviceEntry, DeviceKind, DiscoveryRule
from device_plugin.discovery import Device, discover, local_path


def test_configured_devices_are_listed_even_when_absent(tmp_path: Path) -> None:
    entry = DeviceEntry(id="qkd0", kind=DeviceKind.HARDWARE, path="/dev/qkd0", link="a-b")
    devices = discover(DeviceConfig(devices=(entry,), discover=()), host_root=tmp_path)
    assert devices == [Device(id="qkd0", kind=DeviceKind.HARDWARE, path="/dev/qkd0", link="a-b")]


def test_pattern_matches_under_the_root_become_devices_with_host_paths(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    for name in ("qkd1", "qkd0", "tty0"):
        (tmp_path / "dev" / name).write_bytes(b"")
    (tmp_path / "dev" / "qkd-dir").mkdir()  # a directory is never a device
    rule = DiscoveryRule(pattern="/dev/qkd*", kind=DeviceKind.HARDWARE, link="a-b")

    devices = discover(DeviceConfig(devices=(), discover=(rule,)), host_root=tmp_path)

    assert devices == [
        Device(id="qkd0", kind=DeviceKind.HARDWARE, path="/dev/qkd0", link="a-b"),
        Device(id="qkd1", kind=DeviceKind.HARDWARE, path="/dev/qkd1", link="a-b"),
    ]


def test_a_configured_device_wins_over_a_match_of_the_same_path_or_id(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "qkd0").write_bytes(b"")
    (tmp_path / "dev" / "qkd1").write_bytes(b"")
    (tmp_path / "dev2").mkdir()
    (tmp_path / "dev2" / "qkd1").write_bytes(b"")
    entries = (
        DeviceEntry(id="main", kind=DeviceKind.HARDWARE, path="/dev/qkd0", link="configured"),
        DeviceEntry(id="qkd1", kind=DeviceKind.HARDWARE, path="/dev/qkd1", link="configured"),
    )
    rules = (
        DiscoveryRule(pattern="/dev/qkd*", kind=DeviceKind.HARDWARE, link="found"),
        DiscoveryRule(pattern="/dev2/qkd*", kind=DeviceKind.HARDWARE, link="found"),
    )

    devices = discover(DeviceConfig(devices=entries, discover=rules), host_root=tmp_path)

    assert [(d.id, d.path, d.link) for d in devices] == [
        ("main", "/dev/qkd0", "configured"),
        ("qkd1", "/dev/qkd1", "configured"),
    ]


def test_matched_file_names_become_safe_device_ids(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "link a:b.sock").write_bytes(b"")
    rule = DiscoveryRule(pattern="/run/*.sock", kind=DeviceKind.SIMULATED, link="")
    (device,) = discover(DeviceConfig(devices=(), discover=(rule,)), host_root=tmp_path)
    assert device.id == "link-a-b.sock"
    assert device.path == "/run/link a:b.sock"


def test_a_root_with_glob_characters_is_taken_literally(tmp_path: Path) -> None:
    root = tmp_path / "root[1]"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "qkd0").write_bytes(b"")
    rule = DiscoveryRule(pattern="/dev/qkd*", kind=DeviceKind.HARDWARE, link="")
    assert [
        d.path for d in discover(DeviceConfig(devices=(), discover=(rule,)), host_root=root)
    ] == ["/dev/qkd0"]


def test_local_path_puts_host_paths_under_the_root() -> None:
    assert local_path("/dev/qkd0", host_root=Path("/host")) == Path("/host/dev/qkd0")
    assert local_path("/dev/qkd0", host_root=Path("/")) == Path("/dev/qkd0")
