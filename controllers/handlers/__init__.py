"""kopf handlers of the QSS node's controller, one module per concern.

Importing a module registers its handlers with kopf; ``controllers.main`` imports all of them,
and a test operator can import just the ones it exercises. Handlers are thin: they decode what
kopf hands them, call the pure functions of the ``controllers`` modules, and apply the result
through ``controllers.kube``.
"""
