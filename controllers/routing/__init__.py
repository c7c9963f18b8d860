"""Link-state routing between QSS nodes (the paper's Routing Module, §3.3).

Pure protocol logic, apart from its transports:

- ``messages``: the LSAs (S and K packets) and the hello, exchange and flood messages;
- ``signing`` and ``trust``: Ed25519 signatures and which keys are accepted for which node;
- ``lsdb``, ``throttle``, ``spf``: the database, rate-limited origination, Dijkstra;
- ``engine.Router``: the protocol of one node, driven by a transport, without I/O;
- ``memory``: an in-memory transport (unit tests, benchmarks);
- ``channel``: the transport over the inter-node channel, run by the controller;
- ``table``: the routing table per destination SAE, the one question key relay asks
  (``RouteFinder.route_to``), and the Route objects' specs;
- ``writer``: keeps the cluster's Route objects equal to the table.

How it works and why it is safe: ``docs/routing.md``.
"""
