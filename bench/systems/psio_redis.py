"""Adapter for reference (b), python-socketio + Redis, and its write-only publishers.

The publishers are python-socketio's own write-only managers, which is how a worker
process emits to such a cluster today (``AsyncRedisManager`` / ``RedisManager``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import socketio

from bench.brokers import Brokers
from bench.systems.base import PublisherSpec, ServerProcessSystem

NAMESPACE: str = "/"


class PythonSocketioRedis(ServerProcessSystem):
    name = "psio-redis"
    label = "python-socketio + Redis (ref)"
    needs = frozenset({"redis"})

    def server_command(self, brokers: Brokers, index: int) -> Sequence[str]:
        assert brokers.redis_url is not None
        argv = [sys.executable, "-m", "bench.systems.psio_server"]
        argv += ["--redis-url", brokers.redis_url, "--channel", self.prefix]
        return [*argv, "--loop", self.server_loop]

    def publisher_spec(self, brokers: Brokers) -> PublisherSpec:
        return PublisherSpec(
            factory="bench.systems.psio_redis:open_publisher",
            sync_factory="bench.systems.psio_redis:open_sync_publisher",
            kwargs={"url": brokers.redis_url, "channel": self.prefix},
        )

    def info(self) -> dict[str, str]:
        return {"python-socketio": version("python-socketio")}


class AsyncRedisEmitter:
    def __init__(self, url: str, channel: str) -> None:
        self._mgr = socketio.AsyncRedisManager(url, channel=channel, write_only=True)

    async def join(self, sid: str, room: str) -> None:
        await self._mgr.enter_room(sid, NAMESPACE, room)

    async def broadcast(self, room: str, event: str, data: Any) -> None:
        await self._mgr.emit(event, data, namespace=NAMESPACE, room=room)

    async def flush(self) -> None:
        """Each emit already awaited its Redis PUBLISH reply."""

    async def close(self) -> None:
        if self._mgr.redis is not None:
            await self._mgr.redis.aclose()


async def open_publisher(*, url: str, channel: str) -> AsyncRedisEmitter:
    return AsyncRedisEmitter(url, channel)


class SyncRedisEmitter:
    def __init__(self, url: str, channel: str) -> None:
        self._mgr = socketio.RedisManager(url, channel=channel, write_only=True)

    def broadcast(self, room: str, event: str, data: Any) -> None:
        self._mgr.emit(event, data, namespace=NAMESPACE, room=room)

    def close(self) -> None:
        if self._mgr.redis is not None:
            self._mgr.redis.close()


def open_sync_publisher(*, url: str, channel: str) -> SyncRedisEmitter:
    return SyncRedisEmitter(url, channel)
