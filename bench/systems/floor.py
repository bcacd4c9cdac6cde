"""Adapter for the floor reference (:mod:`bench.systems.floor_server`).

The least a Python fan-out server can do on the same broker path as the others: a raw
``asyncio.Protocol`` websocket server, one frame per message written once per tick to
each member. It uses the plain reference's publishers unchanged (bare nats-py, the same
subjects), so the two references differ only in the server.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bench.brokers import Brokers
from bench.systems.base import PublisherSpec, ServerProcessSystem


class FloorReference(ServerProcessSystem):
    name = "floor"
    label = "floor (raw asyncio Protocol) + NATS (ref)"
    needs = frozenset({"nats"})
    own_publisher = False  # plain's publishers: S4 is plain's figure

    def server_command(self, brokers: Brokers, index: int) -> Sequence[str]:
        assert brokers.nats_url is not None
        argv = [sys.executable, "-m", "bench.systems.floor_server"]
        argv += ["--nats-url", brokers.nats_url, "--prefix", self.prefix]
        return [*argv, "--loop", self.server_loop]

    def publisher_spec(self, brokers: Brokers) -> PublisherSpec:
        return PublisherSpec(
            factory="bench.systems.plain:open_publisher",
            sync_factory="bench.systems.plain:open_sync_publisher",
            kwargs={"url": brokers.nats_url, "prefix": self.prefix},
        )
