"""kopf handlers of the QSS node's controller; importing this package registers them all.

Handlers are thin: they decode what kopf hands them, call the pure functions of the
``controllers`` modules, and apply the result through ``controllers.kube``.
"""

from controllers.handlers import links as links

__all__ = ["links"]
