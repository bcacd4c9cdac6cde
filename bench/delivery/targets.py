"""The systems a delivery variant runs: Sailcast gateways on NATS, or Node socket.io.

A target starts its brokers and servers inside a :class:`Processes`, answers the
clients' join requests (``post /bench/join {room}``), publishes the numbered messages
(``{"r": room index, "n": 1.., "t": ms}`` as event ``m``) and knows how to hurt itself
(kill or restart a server, kill a NATS node). Publishing returns, per room, the time
each number was sent and the numbers whose publish failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from bench.brokers import Brokers
from bench.delivery.processes import (
    Child,
    NatsNode,
    ProcessError,
    Processes,
    gateway_argv,
    metrics_page,
)

EVENT: Final = "m"
JOIN_PATH: Final = "/bench/join"
HISTORY_RULES: Final = "*=100/2m"
RECOVERY_WINDOW_S: Final = 120
PUBLISH_TIMEOUT_S: Final = 5.0
STORED_RETRY_S: Final = 30.0
"""How long a stored publish is retried (same msg_id) before it counts as failed."""
DRAIN_WAIT_S: Final = 40.0
"""How long a SIGTERMed gateway may drain (its default --drain-timeout-s is 25 s)."""
ADDON_PATH: Final = "/sailcast/recovery.js"
NODE_DIR: Final = Path(__file__).resolve().parent.parent / "node"
METRIC_WORDS: Final = ("recover", "replay", "history", "session")


@dataclass(kw_only=True)
class Published:
    """What the publisher did: per room, send times (index n-1) and failed numbers."""

    sent_at_ms: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, list[int]] = field(default_factory=dict)
    retries: int = 0
    """Stored publishes tried again with the same msg_id (history on)."""
    errors: list[str] = field(default_factory=list)


def now_ms() -> float:
    return time.time() * 1000.0


class Target(ABC):
    """A started system under test (see the module docstring)."""

    label: str
    servers: list[Child]

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self.servers = []
        self.on_backend_change: Callable[[int | None, int | None], None] | None = None
        """Called with (port, None) when a server is being stopped and (None, port)
        when it is back: the balancer follows, as a Service's endpoints do."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def publish(
        self, rooms: list[str], *, rate_per_room: float, duration_s: float
    ) -> Published: ...

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def addon_url(self) -> str | None:
        return None

    async def kill_server(self, index: int) -> str:
        child = self.servers[index]
        await child.stop(signal.SIGKILL)
        return f"SIGKILL {child.name} (port {child.port})"

    async def rolling_restart(self) -> list[str]:
        raise NotImplementedError(f"{self.label}: no rolling restart")

    async def kill_nats_node(self) -> str:
        raise NotImplementedError(f"{self.label}: no NATS cluster")

    async def facts(self) -> dict[str, Any]:
        """Free-form facts for the JSON (server metrics about recovery, ...)."""
        return {}

    async def close(self) -> None:  # noqa: B027 (most targets hold nothing else)
        """Anything not a child process (connections); children stop with ``procs``."""


# -- Sailcast -------------------------------------------------------------------------------


class SailcastTarget(Target):
    """``gateways`` gateways (``python -m gateway``) on 1 or 3 NATS nodes with JetStream.

    ``history`` passes ``--history '*=100/2m' --recovery-window-s 120`` (and
    ``--history-replicas 3`` on three nodes): the recovery-on variants. The join worker
    and the publisher run in this process on the publisher library.
    """

    def __init__(
        self, procs: Processes, *, gateways: int = 2, history: bool, nats_nodes: int = 1
    ) -> None:
        super().__init__(procs)
        self.gateways = gateways
        self.history = history
        self.nats_nodes = nats_nodes
        self.label = f"sailcast {gateways} gw, history {'on' if history else 'off'}"
        self.prefix = f"dlv{secrets.token_hex(3)}"
        self.nats: list[NatsNode] = []
        self._generation = 0
        self._pub: Any = None
        self._service: Any = None

    @property
    def nats_urls(self) -> str:
        return ",".join(n.url for n in self.nats if n.child.alive) or self.nats[0].url

    def _argv(self, index: int) -> list[str]:
        self._generation += 1
        argv = gateway_argv(
            ",".join(n.url for n in self.nats), self.prefix, f"dlv-{index}-{self._generation}"
        )
        if self.history:
            argv += ["--history", HISTORY_RULES, "--recovery-window-s", str(RECOVERY_WINDOW_S)]
            if self.nats_nodes > 1:
                argv += ["--history-replicas", str(self.nats_nodes)]
        return argv

    async def _start_gateway(self, index: int) -> Child:
        return await self.procs.spawn(f"gateway{index}", self._argv(index))

    async def start(self) -> None:
        self.nats = await self.procs.nats_cluster(self.nats_nodes)
        # One at a time: each creates/reconciles the history stream at start.
        for i in range(self.gateways):
            self.servers.append(await self._start_gateway(i))
        from publisher import Publisher, Router

        router = Router()

        @router.post(JOIN_PATH)
        async def join(req: Any) -> str:
            room = req.body.get("room") if isinstance(req.body, dict) else None
            if not isinstance(room, str):
                raise ValueError("no room")
            await req.join(room)
            return "OK"

        from publisher.router import RouterService

        self._pub = await Publisher.connect([n.url for n in self.nats], prefix=self.prefix)
        self._service = RouterService(router, self._pub)
        await self._service.start()

    def addon_url(self) -> str | None:
        return f"http://127.0.0.1:{self.servers[0].port}{ADDON_PATH}"

    async def publish(
        self, rooms: list[str], *, rate_per_room: float, duration_s: float
    ) -> Published:
        out = Published(sent_at_ms={r: [] for r in rooms}, failed={r: [] for r in rooms})
        total = max(1, round(rate_per_room * duration_s))
        loop = asyncio.get_running_loop()
        start = loop.time()

        stored = bool(self._pub.history_rules)
        in_order = {room: asyncio.Lock() for room in rooms}  # FIFO: a retry keeps its place

        def failed(room: str, n: int, exc: Exception) -> None:
            out.failed[room].append(n)  # counted and shown: the publish is not expected
            if len(out.errors) < 20:
                out.errors.append(f"{room}#{n}: {type(exc).__name__}: {exc}")

        async def stored_once(room: str, n: int, data: dict[str, float]) -> None:
            """As a worker that must not lose a message does (docs/recovery.md,
            "Idempotent publish"): wait until stored, and retry a failure (a JetStream
            leader election: seconds) with the same msg_id, in the room's order."""
            deadline = loop.time() + STORED_RETRY_S
            while True:
                try:
                    await self._pub.sockets.broadcast(
                        room, EVENT, data, msg_id=f"{room}#{n}", wait_stored=True
                    )
                    return
                except Exception as exc:
                    out.retries += 1
                    if loop.time() > deadline:
                        failed(room, n, exc)
                        return
                    await asyncio.sleep(0.25)

        async def one(r: int, room: str, n: int) -> None:
            t = now_ms()
            out.sent_at_ms[room].append(t)
            data = {"r": r, "n": n, "t": t}
            if stored:
                async with in_order[room]:
                    await stored_once(room, n, data)
                return
            try:
                await asyncio.wait_for(
                    self._pub.sockets.broadcast(room, EVENT, data), PUBLISH_TIMEOUT_S
                )
            except Exception as exc:
                failed(room, n, exc)

        pending: set[asyncio.Task[None]] = set()
        for n in range(1, total + 1):
            due = start + (n - 1) / rate_per_room
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            for r, room in enumerate(rooms):
                task = asyncio.create_task(one(r, room, n))
                pending.add(task)
                task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(list(pending))
        with contextlib.suppress(Exception):
            await self._pub.flush()
        return out

    async def rolling_restart(self) -> list[str]:
        """Each gateway in turn: out of the balancer and SIGTERM (as Kubernetes removes a
        terminating pod from the Service's endpoints while it drains), restart it, wait
        for its ready line, back into the balancer."""
        done: list[str] = []
        for i, old in enumerate(list(self.servers)):
            if self.on_backend_change is not None:
                self.on_backend_change(old.port, None)
            code = await old.stop(signal.SIGTERM, timeout_s=DRAIN_WAIT_S)
            new = await self._start_gateway(i)
            self.servers[i] = new
            if self.on_backend_change is not None:
                self.on_backend_change(None, new.port)
            done.append(f"{time.strftime('%H:%M:%S')} {old.name} exit {code}, back on {new.port}")
        return done

    async def kill_nats_node(self) -> str:
        node = self.nats[-1]
        await node.child.stop(signal.SIGKILL)
        return f"SIGKILL {node.name} (port {node.port}) of {len(self.nats)}"

    async def facts(self) -> dict[str, Any]:
        """The gateways' recovery/history metric lines (empty until the feature lands)."""
        lines: dict[str, list[str]] = {}
        for child in self.servers:
            if not child.alive:
                continue
            page = await metrics_page(child)
            if page is None:
                continue
            lines[child.name] = [
                ln
                for ln in page.splitlines()
                if not ln.startswith("#")
                and "_created" not in ln
                and any(w in ln for w in METRIC_WORDS)
            ]
        return {"gateway_metrics": lines}

    async def close(self) -> None:
        if self._service is not None:
            with contextlib.suppress(Exception):
                await self._service.stop(timeout_s=2)
        if self._pub is not None:
            with contextlib.suppress(Exception):
                await self._pub.close()


# -- Node socket.io references -------------------------------------------------------------


class NodeTarget(Target):
    """Node socket.io 4 (bench/node/delivery_server.js): one node with the in-memory
    adapter and connectionStateRecovery, or ``servers`` nodes on the redis adapter
    without it. Server 0 publishes (``io.to(room).emit``), told so on its stdin."""

    def __init__(self, procs: Processes, *, csr: bool, servers: int = 1) -> None:
        super().__init__(procs)
        self.csr = csr
        self.count = servers
        self.label = "node socket.io " + (
            "in-memory + CSR, 1 node" if csr else f"redis adapter, {servers} nodes"
        )
        self.key = f"dlv{secrets.token_hex(3)}"
        self._brokers: Brokers | None = None

    async def start(self) -> None:
        argv = ["node", str(NODE_DIR / "delivery_server.js")]
        if self.csr:
            argv += ["--adapter", "memory", "--csr"]
        else:
            self._brokers = Brokers(self.procs.log)
            await self._brokers.ensure(frozenset({"redis"}))
            assert self._brokers.redis_url is not None
            argv += ["--adapter", "redis", "--redis-url", self._brokers.redis_url]
            argv += ["--key", self.key]
        for i in range(self.count):
            self.servers.append(await self.procs.spawn(f"node{i}", argv, stdin=(i == 0)))

    async def publish(
        self, rooms: list[str], *, rate_per_room: float, duration_s: float
    ) -> Published:
        child = self.servers[0]
        assert child.proc.stdin is not None
        assert child.proc.stdout is not None
        request = {"op": "run", "rooms": rooms, "rate_per_room": rate_per_room}
        child.proc.stdin.write(orjson.dumps({**request, "duration_s": duration_s}) + b"\n")
        await child.proc.stdin.drain()
        line = await asyncio.wait_for(child.proc.stdout.readline(), duration_s + 30)
        if not line:
            raise ProcessError("the publishing Node server exited")
        reply = orjson.loads(line)
        if not reply.get("ok"):
            raise ProcessError(f"Node publisher: {reply.get('error')}")
        sent = {room: [float(t) for t in times] for room, times in reply["sent"].items()}
        return Published(sent_at_ms=sent, failed={r: [] for r in rooms})

    async def close(self) -> None:
        if self._brokers is not None:
            await self._brokers.stop()
