"""The harness's side of the client processes (:mod:`bench.presence.clients`): client
``i`` lives in process ``i % workers``, and answers are merged back by client index."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from bench import hist
from bench.procstat import total_cpu_seconds
from bench.rpc import Worker

CONNECT_TIMEOUT_S: float = 300.0


class ConnectFailed(RuntimeError):
    """Some clients could not connect (the message has the first errors)."""


class ClientPool:
    def __init__(self, log: TextIO, *, workers: int) -> None:
        self.log = log
        self.size = workers
        self.workers: list[Worker] = []
        self.sids: dict[int, str] = {}

    async def start(self) -> None:
        for w in range(self.size):
            self.workers.append(
                await Worker.spawn("bench.presence.clients", name=f"clients{w}", log=self.log)
            )

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def cpu_s(self) -> float:
        return total_cpu_seconds(self.pids)

    async def connect(
        self, urls: Sequence[str], indices: Sequence[int], query_of: Callable[[int], str]
    ) -> dict[str, Any]:
        """Connect clients ``indices`` (client ``i`` to ``urls[i % len(urls)]``)."""
        parts: list[list[int]] = [[] for _ in self.workers]
        for i in indices:
            parts[i % len(self.workers)].append(i)
        replies = await asyncio.gather(
            *(
                w.call(
                    "connect",
                    timeout_s=CONNECT_TIMEOUT_S,
                    urls=list(urls),
                    indices=part,
                    queries=[query_of(i) for i in part],
                )
                for w, part in zip(self.workers, parts, strict=True)
                if part
            )
        )
        failed = sum(r["failed"] for r in replies)
        for r in replies:
            self.sids.update({int(i): s for i, s in r["sids"].items()})
        if failed:
            errors = [e for r in replies for e in r["errors"]]
            raise ConnectFailed(f"{failed} of {len(indices)} clients did not connect: {errors[:3]}")
        return {"seconds": max(r["seconds"] for r in replies), "connected": len(indices)}

    async def reset(self) -> None:
        await asyncio.gather(*(w.call("reset") for w in self.workers))

    async def stats(self) -> dict[str, Any]:
        """Events received since the last reset, summed over processes."""
        replies = await asyncio.gather(*(w.call("stats") for w in self.workers))
        received: dict[str, int] = {}
        for r in replies:
            for kind, n in r["received"].items():
                received[kind] = received.get(kind, 0) + n
        return {
            "received": received,
            "other": sum(r["other"] for r in replies),
            "bench": sum(r["bench"] for r in replies),
            "connected": sum(r["connected"] for r in replies),
        }

    async def collect(self, k: int) -> dict[str, Any]:
        """Step ``k``'s timed ``bench`` events over every process: ``n`` and the merged
        histogram (:mod:`bench.hist`); the workers forget them."""
        replies = await asyncio.gather(*(w.call("collect", k=k) for w in self.workers))
        return {
            "n": sum(r["n"] for r in replies),
            "hist": hist.merge(r["hist"] for r in replies),
        }

    async def views(self, room: str, indices: Sequence[int] | None = None) -> dict[int, Any]:
        """Client index -> its view of ``room``."""
        replies = await asyncio.gather(
            *(
                w.call("views", room=room, indices=list(indices) if indices is not None else None)
                for w in self.workers
            )
        )
        return {int(i): v for r in replies for i, v in r["views"].items()}

    async def close_all(self) -> None:
        await asyncio.gather(*(w.call("close_all") for w in self.workers))
        self.sids.clear()

    async def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                await w.close()
        self.workers.clear()
