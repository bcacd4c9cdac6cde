"""Adapter: the Sailcast gateway with history on (``--history '*=100/2m'``), for the cost
of history on S1/S2 (deliveries per CPU-s) and S4 (publish rate) beside ``sailcast``.

Every room then has a rule, so the publisher (which reads the rules from the history
stream the gateways create) sends each broadcast through JetStream and awaits its
PubAck, and the gateways receive the stream's republished copies. History needs a
NATS server with JetStream; the run's shared broker has none, so this system starts
its own (``gateway.embedded_nats``: ``-js`` on a temporary store, loopback, free port)
and stops it with its servers. That server's CPU is not in the "server" figure (as the
shared broker's is not for ``sailcast``).

Until the history feature is merged the gateways accept the flag and change nothing:
the figures then equal ``sailcast``'s within noise.
"""

from __future__ import annotations

import asyncio
import atexit
from typing import Any, TextIO

from bench.brokers import Brokers
from bench.systems.base import Deployment, PublisherSpec
from bench.systems.sailcast import Sailcast

HISTORY_RULES: str = "*=100/2m"


class SailcastHistory(Sailcast):
    name = "sailcast-history"
    label = "Sailcast gateway, history on"
    needs = frozenset()  # its own JetStream nats-server, not the shared broker

    def __init__(self, *, server_loop: str = "uvloop") -> None:
        super().__init__(server_loop=server_loop)
        self._nats: Any = None  # gateway.embedded_nats.EmbeddedNats

    async def _own_brokers(self, log: TextIO) -> Brokers:
        """A Brokers view whose NATS is this system's JetStream server (started once)."""
        if self._nats is None:
            from gateway.embedded_nats import EmbeddedNats

            nats = EmbeddedNats(jetstream=True)
            await asyncio.to_thread(nats.start)
            atexit.register(nats.close)  # S4 leaves it running: stop it at exit at the latest
            self._nats = nats
        own = Brokers(log)
        own.nats_url = str(self._nats.url)
        return own

    def server_command(self, brokers: Brokers, index: int) -> list[str]:
        return [*super().server_command(brokers, index), "--history", HISTORY_RULES]

    def info(self) -> dict[str, str]:
        return {"history": HISTORY_RULES, "nats": "own nats-server -js (CPU not counted)"}

    async def start(self, brokers: Brokers, *, processes: int, log: TextIO) -> Deployment:
        return await super().start(await self._own_brokers(log), processes=processes, log=log)

    async def stop(self) -> None:
        await super().stop()
        if self._nats is not None:
            await asyncio.to_thread(self._nats.close)
            self._nats = None

    async def publisher_only(self, brokers: Brokers, *, log: TextIO) -> PublisherSpec:
        """One gateway starts (it creates the history stream) and stops again; the
        JetStream server stays up for the publisher (stopped at exit)."""
        own = await self._own_brokers(log)
        deployment = await super().start(own, processes=1, log=log)
        await super().stop()
        return deployment.publisher
