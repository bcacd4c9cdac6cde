"""Adapter for reference (a), the plain aiohttp + NATS server, and its publishers.

The async publisher is bare nats-py (``publish`` of ``["event", data]``); the sync
one writes NATS ``PUB`` lines to a blocking socket. Both are the floor a publisher
library can approach, which is what the S4 ratios are measured against.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import nats
import orjson
from nats.aio.client import Client as NATS

from bench.brokers import Brokers
from bench.systems.base import PublisherSpec, ServerProcessSystem


class PlainAiohttp(ServerProcessSystem):
    name = "plain"
    label = "plain aiohttp + NATS (ref)"
    needs = frozenset({"nats"})

    def server_command(self, brokers: Brokers, index: int) -> Sequence[str]:
        assert brokers.nats_url is not None
        argv = [sys.executable, "-m", "bench.systems.plain_server"]
        argv += ["--nats-url", brokers.nats_url, "--prefix", self.prefix]
        return [*argv, "--loop", self.server_loop]

    def publisher_spec(self, brokers: Brokers) -> PublisherSpec:
        return PublisherSpec(
            factory="bench.systems.plain:open_publisher",
            sync_factory="bench.systems.plain:open_sync_publisher",
            kwargs={"url": brokers.nats_url, "prefix": self.prefix},
        )


class NatsPublisher:
    def __init__(self, nc: NATS, prefix: str) -> None:
        self._nc = nc
        self._prefix = prefix

    async def join(self, sid: str, room: str) -> None:
        await self._nc.publish(f"{self._prefix}.ctl", orjson.dumps([[sid, room]]))

    async def broadcast(self, room: str, event: str, data: Any) -> None:
        await self._nc.publish(f"{self._prefix}.room.{room}", orjson.dumps([event, data]))

    async def flush(self) -> None:
        await self._nc.flush()

    async def close(self) -> None:
        await self._nc.close()


async def open_publisher(*, url: str, prefix: str) -> NatsPublisher:
    return NatsPublisher(await nats.connect(url, name="bench-plain-pub"), prefix)


class RawSyncNatsPublisher:
    """NATS PUB lines over a blocking socket: one ``sendall`` per publish."""

    def __init__(self, url: str, prefix: str) -> None:
        parsed = urlparse(url)
        self._sock = socket.create_connection((parsed.hostname, parsed.port or 4222))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._file = self._sock.makefile("rb")
        if not self._file.readline().startswith(b"INFO"):
            raise ConnectionError("no INFO from nats-server")
        self._sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
        self._ping()
        self._prefix = prefix.encode()

    def _ping(self) -> None:
        self._sock.sendall(b"PING\r\n")
        while (line := self._file.readline()) != b"PONG\r\n":
            if not line or line.startswith(b"-ERR"):
                raise ConnectionError(f"nats-server: {line!r}")

    def broadcast(self, room: str, event: str, data: Any) -> None:
        payload = orjson.dumps([event, data])
        subject = self._prefix + b".room." + room.encode()
        self._sock.sendall(b"PUB %s %d\r\n%s\r\n" % (subject, len(payload), payload))

    def close(self) -> None:
        self._ping()  # the server has processed everything before it answers PONG
        self._file.close()
        self._sock.close()


def open_sync_publisher(*, url: str, prefix: str) -> RawSyncNatsPublisher:
    return RawSyncNatsPublisher(url, prefix)
