"""The processes one delivery variant runs, each stopped however the run ends.

:class:`Processes` owns every child it starts (servers, NATS nodes, client processes)
and stops them all in :meth:`Processes.close` (the driver calls it in a ``finally``, so
also on Ctrl-C or a failure). Servers print the gateway contract's ready line
(``{"event": "ready", "port": N, ...}``); NATS nodes are ready when their monitoring
``/healthz`` answers 200 (JetStream included).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import orjson

from bench.brokers import nats_server_binary
from bench.procstat import free_port
from bench.rpc import REPO_ROOT

READY_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
NATS_READY_TIMEOUT_S: Final = 30.0


class ProcessError(RuntimeError):
    """A child exited or did not become ready."""


@dataclass(kw_only=True)
class Child:
    """One started process and what its ready line said."""

    name: str
    proc: asyncio.subprocess.Process
    ready: dict[str, Any] = field(default_factory=dict)
    drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.ready["port"])

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def send(self, sig: signal.Signals) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def stop(
        self, sig: signal.Signals = signal.SIGTERM, *, timeout_s: float = STOP_TIMEOUT_S
    ) -> int:
        """Signal, wait (SIGKILL after ``timeout_s``); returns the exit code."""
        self.send(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.send(signal.SIGKILL)
            await self.proc.wait()
        if self.drain is not None:
            self.drain.cancel()
        return int(self.proc.returncode or 0)


@dataclass(kw_only=True)
class NatsNode:
    name: str
    port: int
    monitor_port: int
    child: Child

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class Processes:
    """Every child of one variant."""

    def __init__(self, log: TextIO) -> None:
        self.log = log
        self.children: list[Child] = []
        self._dirs: list[tempfile.TemporaryDirectory[str]] = []

    async def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready_line: bool = True,
        stdin: bool = False,
        env: dict[str, str] | None = None,
    ) -> Child:
        """Start ``argv``; with ``ready_line`` wait for it (stdout) and log the rest."""
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH", "")) if p
        )
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if ready_line or stdin else self.log,
            stderr=self.log,
            cwd=REPO_ROOT,
            env=full_env,
            limit=16 * 1024 * 1024,
        )
        child = Child(name=name, proc=proc)
        self.children.append(child)
        if ready_line:
            child.ready = await self._ready(child)
            if not stdin:
                child.drain = asyncio.create_task(self._drain(child))
        return child

    async def _ready(self, child: Child) -> dict[str, Any]:
        assert child.proc.stdout is not None
        stdout = child.proc.stdout

        async def read() -> dict[str, Any]:
            while True:
                line = await stdout.readline()
                if not line:
                    raise ProcessError(f"{child.name} exited before its ready line")
                with contextlib.suppress(orjson.JSONDecodeError):
                    msg = orjson.loads(line)
                    if isinstance(msg, dict) and msg.get("event") == "ready":
                        return msg
                self.log.write(f"[{child.name}] {line.decode(errors='replace')}")

        try:
            return await asyncio.wait_for(read(), READY_TIMEOUT_S)
        except TimeoutError:
            raise ProcessError(f"{child.name}: no ready line within {READY_TIMEOUT_S} s") from None

    async def _drain(self, child: Child) -> None:  # a full stdout pipe would stall it
        assert child.proc.stdout is not None
        while line := await child.proc.stdout.readline():
            self.log.write(f"[{child.name}] {line.decode(errors='replace')}")

    async def nats_cluster(self, nodes: int, *, jetstream: bool = True) -> list[NatsNode]:
        """``nodes`` nats-server processes (a cluster when more than one), all ready."""
        store = tempfile.TemporaryDirectory(prefix="sailcast-delivery-nats-")
        self._dirs.append(store)
        ports = [(free_port(), free_port(), free_port()) for _ in range(nodes)]
        out: list[NatsNode] = []
        for i, (port, monitor, cluster) in enumerate(ports):
            name = f"nats{i}"
            argv = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor)]
            argv += ["--server_name", name]
            if jetstream:
                argv += ["-js", "-sd", str(Path(store.name) / name)]
            if nodes > 1:
                routes = ",".join(
                    f"nats://127.0.0.1:{c}" for j, (_, _, c) in enumerate(ports) if j != i
                )
                argv += ["--cluster", f"nats://127.0.0.1:{cluster}", "--routes", routes]
                argv += ["--cluster_name", "delivery"]
            child = await self.spawn(name, argv, ready_line=False)
            out.append(NatsNode(name=name, port=port, monitor_port=monitor, child=child))
        await asyncio.gather(*(wait_healthy(n) for n in out))
        return out

    async def close(self) -> None:
        """Stop every child still running (SIGTERM, then SIGKILL after a timeout)."""
        await asyncio.gather(*(c.stop() for c in self.children if c.alive), return_exceptions=True)
        for c in self.children:
            if c.drain is not None:
                c.drain.cancel()
        self.children.clear()
        for d in self._dirs:
            with contextlib.suppress(OSError):
                d.cleanup()
        self._dirs.clear()


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


async def http_get(url: str) -> tuple[int, bytes]:
    """GET without blocking the loop (status 0 when nothing answered)."""

    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), b""
        except OSError:
            return 0, b""

    return await asyncio.to_thread(get)


def gateway_argv(nats_url: str, prefix: str, gateway_id: str, *extra: str) -> list[str]:
    """A Sailcast gateway as every bench starts one: loopback, ephemeral ports, quiet,
    no drain delay; ``extra`` flags after."""
    return [
        sys.executable, "-m", "gateway",
        "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
        "--nats-url", nats_url, "--prefix", prefix, "--gateway-id", gateway_id,
        "--log-level", "WARNING", "--drain-delay-s", "0",
        *extra,
    ]  # fmt: skip


async def metrics_page(child: Child) -> str | None:
    """A started gateway's /metrics text; None if it did not answer 200."""
    status, body = await http_get(f"http://127.0.0.1:{child.ready['metrics_port']}/metrics")
    return body.decode(errors="replace") if status == 200 else None


async def wait_healthy(node: NatsNode) -> None:
    """Until the node's /healthz (JetStream ready, cluster formed) answers 200."""
    url = f"http://127.0.0.1:{node.monitor_port}/healthz"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NATS_READY_TIMEOUT_S
    while await asyncio.to_thread(_http_status, url) != 200:
        if not node.child.alive:
            raise ProcessError(f"{node.name} exited (see the log)")
        if loop.time() > deadline:
            raise ProcessError(f"{node.name} not healthy after {NATS_READY_TIMEOUT_S} s")
        await asyncio.sleep(0.2)
