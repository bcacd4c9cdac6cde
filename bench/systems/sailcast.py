"""Adapter for the Sailcast gateway (``python -m gateway``) and publisher.

Follows docs/gateway-contract.md (flags, ready line) and the publisher API
(``Publisher.connect``, ``pub.sockets.join/broadcast``, ``SyncPublisher``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from typing import Any

from bench.brokers import Brokers
from bench.systems.base import PublisherSpec, ServerProcessSystem


class Sailcast(ServerProcessSystem):
    name = "sailcast"
    label = "Sailcast gateway"
    needs = frozenset({"nats"})

    def unavailable_reason(self) -> str | None:
        for module in ("gateway", "publisher"):
            if importlib.util.find_spec(module) is None:
                return f"package {module!r} is not importable"
        return None

    def server_command(self, brokers: Brokers, index: int) -> Sequence[str]:
        """``python -m gateway ...``, exactly as deployed.

        The gateway picks uvloop itself whenever it can import it (gateway/cli.py)
        and has no flag for it: for ``--server-loop asyncio`` it is started through
        :mod:`bench.systems.no_uvloop`. Its ready line names the loop it really runs
        on (``"loop"``, gateway/app.py), which the harness records as the server's loop
        (:meth:`ServerProcessSystem.start`).
        """
        assert brokers.nats_url is not None
        if self.server_loop == "uvloop":
            python = [sys.executable, "-m", "gateway"]
        else:
            python = [sys.executable, "-m", "bench.systems.no_uvloop", "gateway"]
        return [
            *python,
            "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
            "--nats-url", brokers.nats_url,
            "--prefix", self.prefix,
            "--gateway-id", f"bench-{index}",
            "--log-level", "WARNING",
            "--drain-delay-s", "0",  # stopping between phases need not wait
        ]  # fmt: skip

    def publisher_spec(self, brokers: Brokers) -> PublisherSpec:
        return PublisherSpec(
            factory="bench.systems.sailcast:open_publisher",
            sync_factory="bench.systems.sailcast:open_sync_publisher",
            kwargs={"servers": brokers.nats_url, "prefix": self.prefix},
        )


class SailcastPublisher:
    def __init__(self, pub: Any) -> None:
        self._pub = pub

    async def join(self, sid: str, room: str) -> None:
        await self._pub.sockets.join(sid, room)

    async def broadcast(self, room: str, event: str, data: Any) -> None:
        await self._pub.sockets.broadcast(room, event, data)

    async def flush(self) -> None:
        await self._pub.flush()

    async def close(self) -> None:
        await self._pub.close()


async def open_publisher(*, servers: str, prefix: str) -> SailcastPublisher:
    from publisher import Publisher

    return SailcastPublisher(await Publisher.connect(servers, prefix=prefix))


class SailcastSyncPublisher:
    def __init__(self, pub: Any) -> None:
        self._pub = pub

    def broadcast(self, room: str, event: str, data: Any) -> None:
        self._pub.sockets.broadcast(room, event, data)

    def close(self) -> None:
        self._pub.close()


def open_sync_publisher(*, servers: str, prefix: str) -> SailcastSyncPublisher:
    from publisher import SyncPublisher

    return SailcastSyncPublisher(SyncPublisher.connect(servers, prefix=prefix))
