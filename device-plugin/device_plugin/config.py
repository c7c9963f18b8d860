"""Settings of the device plugin and the device configuration file it reads.

``main`` builds one :class:`Settings` from the command line and loads one :class:`DeviceConfig`
with :func:`load_device_config`; everything else receives them as arguments and never reads the
environment. A bad file raises :class:`ConfigError` whose message is one sentence naming the file,
the place in it and what to fix (``main`` prints it as the single error line).

The device configuration file (YAML)::

    devices:                      # devices named one by one
      - id: qkd-node-a-node-b     # device ID the kubelet sees: [A-Za-z0-9][A-Za-z0-9._-]{0,62}
        kind: simulated           # simulated: path is the simulated device's Unix socket
        path: /var/run/qss/devices/node-a-node-b.sock
        link: node-b              # the QKDLink (by its name on this node) the device serves
      - id: qkd0
        kind: hardware            # hardware: path is a device node
        path: /dev/qkd0
        link: node-c
    discover:                     # optional: device nodes found by a glob pattern
      - pattern: /dev/qkd*        # matched under the plugin's host root
        kind: hardware            # optional, hardware by default
        link: node-d              # optional, "" when the link is not known here

Paths are host paths, absolute. Both lists are optional, but a file must name at least one device
or one discovery rule. The devices of link L are offered as the resource ``qss.dev/qkd-L``
(``device_plugin.resources``), those of no known link as ``qss.dev/qkd``.
"""

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from device_plugin.api import DEVICE_PLUGIN_PATH, KUBELET_SOCKET_NAME
from qss_api import RESOURCE_QKD_DEVICE

# The kubelet limits device IDs to 63 characters; we also keep them to characters that are safe in
# environment values, file names and log lines.
DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class ConfigError(Exception):
    """The device configuration file cannot be used; the message says where and what to fix."""


class DeviceKind(enum.StrEnum):
    """How a device is reached: a simulated device's Unix socket or a hardware device node."""

    SIMULATED = "simulated"
    HARDWARE = "hardware"


@dataclass(frozen=True, kw_only=True)
class DeviceEntry:
    """One device named in the configuration file."""

    id: str
    kind: DeviceKind
    path: str
    link: str


@dataclass(frozen=True, kw_only=True)
class DiscoveryRule:
    """Device nodes (or simulated sockets) found by a glob pattern; the ID is the file's name."""

    pattern: str
    kind: DeviceKind
    link: str


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    """The whole device configuration file."""

    devices: tuple[DeviceEntry, ...]
    discover: tuple[DiscoveryRule, ...]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How the plugin runs; built once by ``main`` from the command line."""

    # Where the device configuration lives; the DaemonSet mounts the ConfigMap here.
    config_path: Path = Path("/etc/qss/device-plugin/devices.yaml")
    # The kubelet looks for plugin sockets in this directory and dials them by file name.
    device_plugin_dir: Path = Path(DEVICE_PLUGIN_PATH)
    # The kubelet's Registration socket; in the same directory unless a test moves it.
    kubelet_socket: Path = Path(DEVICE_PLUGIN_PATH) / KUBELET_SOCKET_NAME
    # Our sockets inside device_plugin_dir are <socket_prefix>-<link>.sock, one per resource.
    socket_prefix: str = "qss-qkd"
    # The extended resources pods request are <resource_prefix>-<link>, one per QKD link
    # (device_plugin.resources); qss_api holds the name every component agrees on.
    resource_prefix: str = RESOURCE_QKD_DEVICE
    # Host paths are looked up under this root; "/" in the DaemonSet, a temp dir in tests.
    host_root: Path = Path("/")
    # Seconds between health rounds; a device's change reaches the kubelet within this time.
    health_interval: float = 5.0
    # Seconds a simulated device has to answer its health probe before it counts as unhealthy.
    probe_timeout: float = 1.0
    # Seconds between checks that our socket and the kubelet's still exist (kubelet restarts).
    socket_poll_interval: float = 1.0
    # Seconds the kubelet has to answer Register; it dials us back before answering.
    register_timeout: float = 10.0
    # First and longest wait before serving and registering again after an error.
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # "host:port" for /metrics and /healthz, or None for no HTTP endpoint.
    metrics_address: str | None = None
    # Python logging level name for the plugin's log on stderr.
    log_level: str = "INFO"


def load_device_config(path: Path) -> DeviceConfig:
    """Read and check the device configuration file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read device config {path}: {exc.strerror or exc}; "
            "mount the ConfigMap there or pass --config"
        ) from None
    return parse_device_config(text, source=str(path))


def parse_device_config(text: str, *, source: str) -> DeviceConfig:
    """Parse the YAML text of a device configuration file; ``source`` names it in errors."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"device config {source} is not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"device config {source} must be a mapping with 'devices' and/or 'discover' lists"
        )
    _no_unknown_keys(raw, {"devices", "discover"}, where="the top level", source=source)
    devices = tuple(
        _device_entry(item, where=f"devices[{i}]", source=source)
        for i, item in enumerate(_list(raw, "devices", source=source))
    )
    rules = tuple(
        _discovery_rule(item, where=f"discover[{i}]", source=source)
        for i, item in enumerate(_list(raw, "discover", source=source))
    )
    if not devices and not rules:
        raise ConfigError(
            f"device config {source} names no devices; add a 'devices' or 'discover' entry"
        )
    seen: set[str] = set()
    for i, entry in enumerate(devices):
        if entry.id in seen:
            raise ConfigError(
                f"device config {source}: devices[{i}].id {entry.id!r} is used twice; "
                "device IDs must be unique"
            )
        seen.add(entry.id)
    return DeviceConfig(devices=devices, discover=rules)


def _list(raw: dict[Any, Any], key: str, *, source: str) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"device config {source}: '{key}' must be a list")
    return value


def _no_unknown_keys(item: dict[Any, Any], allowed: set[str], *, where: str, source: str) -> None:
    unknown = sorted(str(k) for k in item if k not in allowed)
    if unknown:
        raise ConfigError(
            f"device config {source}: unknown key {unknown[0]!r} in {where}; "
            f"allowed keys are {', '.join(sorted(allowed))}"
        )


def _string(
    item: dict[Any, Any], key: str, *, where: str, source: str, default: str | None = None
) -> str:
    value = item.get(key, default)
    if value is None:
        raise ConfigError(f"device config {source}: {where}.{key} is missing")
    if not isinstance(value, str):
        raise ConfigError(f"device config {source}: {where}.{key} must be a string")
    return value


def _kind(item: dict[Any, Any], *, where: str, source: str, default: str | None) -> DeviceKind:
    value = _string(item, "kind", where=where, source=source, default=default)
    try:
        return DeviceKind(value)
    except ValueError:
        raise ConfigError(
            f"device config {source}: {where}.kind must be 'simulated' or 'hardware', got {value!r}"
        ) from None


def _absolute(path: str, *, key: str, where: str, source: str) -> str:
    if not path.startswith("/"):
        raise ConfigError(
            f"device config {source}: {where}.{key} must be an absolute host path, got {path!r}"
        )
    return path


def _device_entry(item: Any, *, where: str, source: str) -> DeviceEntry:
    if not isinstance(item, dict):
        raise ConfigError(f"device config {source}: {where} must be a mapping")
    _no_unknown_keys(item, {"id", "kind", "path", "link"}, where=where, source=source)
    device_id = _string(item, "id", where=where, source=source)
    if not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise ConfigError(
            f"device config {source}: {where}.id {device_id!r} is not a valid device ID; use up to "
            "63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    link = _string(item, "link", where=where, source=source)
    if not link:
        raise ConfigError(f"device config {source}: {where}.link must name the link it serves")
    return DeviceEntry(
        id=device_id,
        kind=_kind(item, where=where, source=source, default=None),
        path=_absolute(
            _string(item, "path", where=where, source=source),
            key="path",
            where=where,
            source=source,
        ),
        link=link,
    )


def _discovery_rule(item: Any, *, where: str, source: str) -> DiscoveryRule:
    if not isinstance(item, dict):
        raise ConfigError(f"device config {source}: {where} must be a mapping")
    _no_unknown_keys(item, {"pattern", "kind", "link"}, where=where, source=source)
    return DiscoveryRule(
        pattern=_absolute(
            _string(item, "pattern", where=where, source=source),
            key="pattern",
            where=where,
            source=source,
        ),
        kind=_kind(item, where=where, source=source, default=DeviceKind.HARDWARE.value),
        link=_string(item, "link", where=where, source=source, default=""),
    )
