"""The device configuration file: what a good one gives, and the clear sentence a bad one gets."""

import dataclasses
from pathlib import Path

import pytest

from device_plugin.config import (
    ConfigError,
    DeviceConfig,
    DeviceEntry,
    DeviceKind,
    DiscoveryRule,
    Settings,
    load_device_config,
    parse_device_config,
)

GOOD = """
devices:
  - id: qkd-alice-bob
    kind: simulated
    path: /var/run/qss/devices/alice-bob.sock
    link: alice-bob
  - id: qkd0
    kind: hardware
    path: /dev/qkd0
    link: alice-carol
discover:
  - pattern: /dev/qkd*
    link: alice-dave
  - pattern: /var/run/qss/devices/*.sock
    kind: simulated
"""


def test_good_file_gives_devices_and_discovery_rules_with_defaults() -> None:
    config = parse_device_config(GOOD, source="devices.yaml")

    assert config == DeviceConfig(
        devices=(
            DeviceEntry(
                id="qkd-alice-bob",
                kind=DeviceKind.SIMULATED,
                path="/var/run/qss/devices/alice-bob.sock",
                link="alice-bob",
            ),
            DeviceEntry(id="qkd0", kind=DeviceKind.HARDWARE, path="/dev/qkd0", link="alice-carol"),
        ),
        discover=(
            DiscoveryRule(pattern="/dev/qkd*", kind=DeviceKind.HARDWARE, link="alice-dave"),
            DiscoveryRule(
                pattern="/var/run/qss/devices/*.sock", kind=DeviceKind.SIMULATED, link=""
            ),
        ),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("devices: [", "is not valid YAML at line 1, column"),
        ("- a\n- b\n", "must be a mapping with 'devices' and/or 'discover' lists"),
        ("{}", "names no devices; add a 'devices' or 'discover' entry"),
        ("devices: {}", "'devices' must be a list"),
        ("devices: [3]", "devices[0] must be a mapping"),
        ("device: []", "unknown key 'device' in the top level"),
        (
            "devices: [{id: a, kind: simulated, path: /s.sock, link: l, colour: red}]",
            "unknown key 'colour' in devices[0]",
        ),
        ("devices: [{kind: simulated, path: /s.sock, link: l}]", "devices[0].id is missing"),
        (
            "devices: [{id: 7, kind: simulated, path: /s, link: l}]",
            "devices[0].id must be a string",
        ),
        (
            "devices: [{id: -bad, kind: simulated, path: /s, link: l}]",
            "devices[0].id '-bad' is not a valid device ID",
        ),
        (
            f"devices: [{{id: {'a' * 64}, kind: simulated, path: /s, link: l}}]",
            "is not a valid device ID",
        ),
        (
            "devices: [{id: a, kind: quantum, path: /s, link: l}]",
            "devices[0].kind must be 'simulated' or 'hardware', got 'quantum'",
        ),
        (
            "devices: [{id: a, kind: hardware, path: dev/qkd0, link: l}]",
            "devices[0].path must be an absolute host path, got 'dev/qkd0'",
        ),
        ("devices: [{id: a, kind: hardware, path: /d}]", "devices[0].link is missing"),
        ("devices: [{id: a, kind: hardware, path: /d, link: ''}]", "must name the link it serves"),
        (
            "devices: [{id: a, kind: hardware, path: /d, link: l},"
            " {id: a, kind: hardware, path: /e, link: l}]",
            "devices[1].id 'a' is used twice",
        ),
        ("discover: [{pattern: qkd*}]", "discover[0].pattern must be an absolute host path"),
        ("discover: [{link: l}]", "discover[0].pattern is missing"),
    ],
)
def test_bad_file_is_one_sentence_naming_the_file_and_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_device_config(text, source="/etc/qss/devices.yaml")

    message = str(caught.value)
    assert expected in message
    assert "/etc/qss/devices.yaml" in message
    assert "\n" not in message


def test_missing_file_says_how_to_provide_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read device config .*missing.yaml.*--config"):
        load_device_config(tmp_path / "missing.yaml")


def test_settings_are_frozen_and_default_to_the_kubelet_paths() -> None:
    settings = Settings()
    assert str(settings.kubelet_socket) == "/var/lib/kubelet/device-plugins/kubelet.sock"
    assert settings.resource_prefix == "qss.dev/qkd"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.resource_prefix = "x/y"  # type: ignore[misc]
