"""Settings of the ETSI GS QKD 014 key API: where it listens and how long enc_keys waits.

A frozen dataclass that ``controllers.main`` builds once (``from_env`` reads the ``QSS_ETSI014_*``
variables from the mapping it is given) and hands to ``init`` and ``Etsi014Server``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

_N = TypeVar("_N", int, float)


class Etsi014SettingsError(ValueError):
    """A 014 setting has a value the API cannot run with; the message says which and why."""


@dataclass(frozen=True, kw_only=True)
class Etsi014Settings:
    # SAEs run in other pods, so the API listens on every interface of the controller's pod.
    host: str = "0.0.0.0"
    # Beside the inter-node channel's 8443; unprivileged, so the pod needs no capability.
    port: int = 9443
    # enc_keys waits this long for keys before answering 503: long enough to ride out a short
    # dip of the key rate, short enough for 014 clients' usual 10 s HTTP timeouts.
    get_keys_timeout: float = 5.0
    # On shutdown, requests in flight get this long to finish before they are cancelled.
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise Etsi014SettingsError(f"ETSI 014 port {self.port} is not a TCP port (0-65535)")
        for name in ("get_keys_timeout", "shutdown_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise Etsi014SettingsError(
                    f"ETSI 014 {name} must be a positive number of seconds, got {value}"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Etsi014Settings:
        """Settings from ``QSS_ETSI014_HOST``, ``_PORT``, ``_GET_KEYS_TIMEOUT`` and
        ``_SHUTDOWN_TIMEOUT``; unset ones keep their defaults."""
        return cls(
            host=environ.get("QSS_ETSI014_HOST", cls.host),
            port=_read(environ, "QSS_ETSI014_PORT", int, cls.port),
            get_keys_timeout=_read(
                environ, "QSS_ETSI014_GET_KEYS_TIMEOUT", float, cls.get_keys_timeout
            ),
            shutdown_timeout=_read(
                environ, "QSS_ETSI014_SHUTDOWN_TIMEOUT", float, cls.shutdown_timeout
            ),
        )


def _read(environ: Mapping[str, str], var: str, convert: Callable[[str], _N], default: _N) -> _N:
    if var not in environ:
        return default
    try:
        return convert(environ[var])
    except ValueError:
        raise Etsi014SettingsError(f"{var}={environ[var]!r} is not a number") from None
