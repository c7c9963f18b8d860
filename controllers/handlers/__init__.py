"""kopf handlers of the QSS node's controller; importing this package registers them all.

Handlers are thin: they decode what kopf hands them, call the pure functions of the
``controllers`` modules, and apply the result through ``controllers.kube``.
"""

from controllers.handlers import keyrequests as keyrequests
from controllers.handlers import links as links
from controllers.handlers import saes as saes
from controllers.handlers import topology as topology

__all__ = ["keyrequests", "links", "saes", "topology"]
