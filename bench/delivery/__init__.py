"""Delivery under forced disconnects (issue 11, "Measured"): ``python -m bench.delivery``.

Modules: ``run`` (CLI, JSON, table), ``driver`` (one variant end to end), ``variants``
(which system, history and fault), ``targets`` (Sailcast gateways on NATS, Node
socket.io references: start, join worker, publisher, faults), ``processes`` (children
and NATS nodes, all stopped at the end), ``balancer`` (round-robin TCP balancer),
``scoring`` (pure: delivered %, duplicates, out-of-order, catch-up), ``table``;
``clients.js`` runs the socket.io-client v4 and sails.io.js clients (npm, package.json
here; installed by bench/setup.sh).
"""
