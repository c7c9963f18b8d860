"""The SAEs of the QKD network as this node knows them: its own, and its neighbours'.

- ``registry.LocalSaes``: the SAEs registered with this node and the one client certificate
  that currently authenticates each (the ETSI 014 API's ``SaeAuthenticator``).
- ``directory.SaeDirectory``: which node each SAE is registered with.
- ``announce``: the ``POST /qss/v1/saes`` channel route and the ``Announcer`` that tells the
  neighbours about this node's SAEs.
- ``reconcile``, ``credentials``, ``secrets``: what the Sae handlers
  (``controllers.handlers.saes``) do: credentials issued or checked, registration, status.

``controllers.main`` creates one ``LocalSaes`` and one ``SaeDirectory`` per process and hands
them to the handlers (kopf memo), the channel app and the 014 server.
"""

from controllers.saes.announce import Announcer, register_routes
from controllers.saes.directory import SaeDirectory
from controllers.saes.registry import DuplicateSaeID, LocalSaes, Registration

__all__ = [
    "Announcer",
    "DuplicateSaeID",
    "LocalSaes",
    "Registration",
    "SaeDirectory",
    "register_routes",
]
