"""The system-under-test seam: what an adapter provides and what the harness does with it.

An adapter says how to start N server processes and how a worker process opens a
publisher for the system; the harness does everything else (clients, joins, pacing,
measuring). Most adapters subclass :class:`ServerProcessSystem` and write two methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TextIO

import orjson

from bench.brokers import Brokers
from bench.procstat import event_loop_of
from bench.rpc import REPO_ROOT

READY_TIMEOUT_S: float = 30.0
SERVER_LOOPS: tuple[str, ...] = ("uvloop", "asyncio")
STOP_TIMEOUT_S: float = 10.0
MAPS: str = "/proc/<pid>/maps"


class BenchPublisher(Protocol):
    """Async publisher as the benchmark drives it (one instance in the publisher process)."""

    async def join(self, sid: str, room: str) -> None:
        """Make the connected socket ``sid`` (its Socket.IO namespace sid) a room member."""

    async def broadcast(self, room: str, event: str, data: Any) -> None:
        """Send ``event`` with JSON-able ``data`` to every member of ``room``."""

    async def flush(self) -> None:
        """Return once everything published so far has been handed to the broker."""

    async def close(self) -> None: ...


class SyncBenchPublisher(Protocol):
    """Blocking publisher for the S4 sync figure."""

    def broadcast(self, room: str, event: str, data: Any) -> None: ...

    def close(self) -> None:
        """Flush and close."""


@dataclass(frozen=True, kw_only=True)
class PublisherSpec:
    """How the publisher process opens this system's publishers.

    Import paths rather than objects, so the spec crosses a process boundary as JSON.
    ``factory`` is ``"module:callable"`` for ``async (**kwargs) -> BenchPublisher``;
    ``sync_factory`` for ``(**kwargs) -> SyncBenchPublisher`` (None: no sync figure).
    A publisher that is not Python sets ``worker`` instead: the argv of a program
    that speaks :mod:`bench.pubworker`'s JSON-lines protocol itself.
    """

    factory: str | None = None
    sync_factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    worker: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.factory is None) == (self.worker is None):
            raise ValueError("PublisherSpec needs exactly one of factory and worker")


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """A started system: where clients connect and which pids count as "server"."""

    urls: tuple[str, ...]
    """One ``http://host:port`` per server process; clients go round-robin."""
    pids: tuple[int, ...]
    """Processes whose CPU time and RSS are the system's cost."""
    publisher: PublisherSpec
    info: dict[str, str] = field(default_factory=dict)
    """Free-form facts recorded in the JSON (versions, ...)."""
    loops: tuple[str, ...] = ()
    """Event loop of each server process as read back from it (see ``loop_sources``)."""
    loop_sources: tuple[str, ...] = ()
    """Where each ``loops`` entry was read: "ready line" or "/proc/<pid>/maps"."""


class System(ABC):
    """A system under test. Subclass :class:`ServerProcessSystem` unless it cannot fit."""

    name: ClassVar[str]
    """CLI name for ``--systems``."""
    label: ClassVar[str]
    """Human label in the table."""
    needs: ClassVar[frozenset[str]] = frozenset()
    """Brokers to start first: subset of {"nats", "redis"}."""
    own_publisher: ClassVar[bool] = True
    """False when the system reuses another system's publisher: S4 (the publisher alone)
    is then not measured twice."""

    def unavailable_reason(self) -> str | None:
        """Why this system cannot run here (missing package/binary), or None."""
        return None

    @abstractmethod
    async def start(self, brokers: Brokers, *, processes: int, log: TextIO) -> Deployment: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def publisher_only(self, brokers: Brokers, *, log: TextIO) -> PublisherSpec:
        """The publisher spec without servers running (S4 measures the publisher alone)."""
        deployment = await self.start(brokers, processes=1, log=log)
        await self.stop()
        return deployment.publisher


class ServerProcessSystem(System):
    """N copies of one server command, each printing the gateway contract's ready line.

    The ready line is the one ``docs/gateway-contract.md`` defines:
    ``{"event": "ready", ..., "port": N}`` on stdout; servers listen on port 0.
    """

    def __init__(self, *, server_loop: str = "uvloop") -> None:
        if server_loop not in SERVER_LOOPS:
            raise ValueError(f"server_loop must be one of {SERVER_LOOPS}")
        self.server_loop = server_loop
        """Event loop a Python server should run on (``--server-loop``): every Python
        system gets the same one, so figures compare like for like. What each process
        really ran on is read back from it (:attr:`Deployment.loops`)."""
        self.prefix = f"bench{secrets.token_hex(3)}"
        self._procs: list[asyncio.subprocess.Process] = []
        self._drains: list[asyncio.Task[None]] = []

    @abstractmethod
    def server_command(self, brokers: Brokers, index: int) -> Sequence[str]:
        """argv of server process ``index`` (it must listen on 127.0.0.1, port 0)."""

    @abstractmethod
    def publisher_spec(self, brokers: Brokers) -> PublisherSpec: ...

    def server_env(self, brokers: Brokers, index: int) -> dict[str, str]:
        """Extra environment for server process ``index``."""
        return {}

    def info(self) -> dict[str, str]:
        return {}

    async def publisher_only(self, brokers: Brokers, *, log: TextIO) -> PublisherSpec:
        await brokers.ensure(self.needs)
        return self.publisher_spec(brokers)

    async def start(self, brokers: Brokers, *, processes: int, log: TextIO) -> Deployment:
        await brokers.ensure(self.needs)
        try:
            for index in range(processes):
                env = {**os.environ, **self.server_env(brokers, index)}
                env["PYTHONPATH"] = os.pathsep.join(
                    p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
                )
                proc = await asyncio.create_subprocess_exec(
                    *self.server_command(brokers, index),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                    cwd=REPO_ROOT,
                    env=env,
                )
                self._procs.append(proc)
            # Processes boot in parallel; wait for every ready line.
            readies = await asyncio.gather(*(self._read_ready(p, log) for p in self._procs))
        except BaseException:
            await self.stop()
            raise
        loops = [
            (str(r["loop"]), "ready line") if r.get("loop") else (event_loop_of(p.pid), MAPS)
            for r, p in zip(readies, self._procs, strict=True)
        ]
        return Deployment(
            urls=tuple(f"http://127.0.0.1:{int(r['port'])}" for r in readies),
            pids=tuple(p.pid for p in self._procs),
            publisher=self.publisher_spec(brokers),
            info=self.info(),
            loops=tuple(loop for loop, _ in loops),
            loop_sources=tuple(source for _, source in loops),
        )

    async def _read_ready(self, proc: asyncio.subprocess.Process, log: TextIO) -> dict[str, Any]:
        """The ready line (``port``, and ``loop`` where the server reports it)."""
        assert proc.stdout is not None
        stdout = proc.stdout

        async def ready_line() -> dict[str, Any]:
            while True:
                line = await stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.name} server exited before its ready line")
                with contextlib.suppress(orjson.JSONDecodeError):
                    msg = orjson.loads(line)
                    if isinstance(msg, dict) and msg.get("event") == "ready":
                        return msg
                log.write(line.decode(errors="replace"))

        ready = await asyncio.wait_for(ready_line(), READY_TIMEOUT_S)

        async def drain() -> None:  # a full stdout pipe would stall the server
            while line := await stdout.readline():
                log.write(line.decode(errors="replace"))

        self._drains.append(asyncio.create_task(drain()))
        return ready

    async def stop(self) -> None:
        for proc in self._procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self._procs:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._drains:
            task.cancel()
        self._procs.clear()
        self._drains.clear()
