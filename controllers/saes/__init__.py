"""The SAEs of the QKD network as this node knows them: its own, and its neighbours'.

- ``registry.LocalSaes``: the SAEs registered with this node and the one client certificate
  that currently authenticates each (the ETSI 014 API's ``SaeAuthenticator``).
- ``directory.SaeDirectory``: which node each SAE is registered with; the routing protocol
  (``controllers.routing``) fills it from the S packets every node floods.
- ``reconcile``, ``credentials``, ``secrets``: what the Sae handlers
  (``controllers.handlers.saes``) do: credentials issued or checked, registration, status.

``controllers.node`` creates one ``LocalSaes`` and one ``SaeDirectory`` per process and hands
them to the handlers (kopf memo), the routing service and the 014 server.
"""

from controllers.saes.directory import SaeDirectory
from controllers.saes.registry import DuplicateSaeID, LocalSaes, Registration

__all__ = [
    "DuplicateSaeID",
    "LocalSaes",
    "Registration",
    "SaeDirectory",
]
