"""The ETSI GS QKD 014 key delivery API (northbound) of a QSS node: SAEs get keys over HTTPS.

``controllers.main`` wires it: ``init(delivery=..., authenticator=..., settings=...)`` builds the
aiohttp app on top of the key delivery contract (``controllers.delivery.api``), and
``Etsi014Server`` (or ``serve``) runs it with mutual TLS on the node's certificate.

Modules: ``requests`` (reading requests, pure), ``responses`` (the standard's documents, pure),
``app`` (routes, authentication by client certificate, error mapping), ``server`` (TLS and the
listener) and ``settings``.
"""

from controllers.etsi014.app import (
    AUTHENTICATOR,
    DEC_KEYS_PATH,
    DELIVERY,
    ENC_KEYS_PATH,
    SETTINGS,
    STATUS_PATH,
    init,
)
from controllers.etsi014.server import Etsi014Server, serve, server_ssl_context
from controllers.etsi014.settings import Etsi014Settings, Etsi014SettingsError

__all__ = [
    "AUTHENTICATOR",
    "DEC_KEYS_PATH",
    "DELIVERY",
    "ENC_KEYS_PATH",
    "SETTINGS",
    "STATUS_PATH",
    "Etsi014Server",
    "Etsi014Settings",
    "Etsi014SettingsError",
    "init",
    "serve",
    "server_ssl_context",
]
