"""Test helpers shared by the integration and e2e suites: real gateway processes and
recording Socket.IO clients. No fakes: every helper drives a real process or socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import socketio
from aiohttp import web

READY_TIMEOUT_S = 20.0


class GatewayKilled(UserWarning):
    """A test gateway needed SIGKILL at stop: its shutdown waits on something."""


@dataclass
class GatewayProcess:
    """A `python -m gateway` child on ephemeral loopback ports."""

    proc: subprocess.Popen[bytes]
    gateway_id: str
    port: int
    metrics_port: int
    api_port: int = 0
    """The HTTP server API's port (0: off, no SAILCAST_API_KEY)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> dict[str, float]:
        """Prometheus samples of this gateway, `name{labels}` → value."""
        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
        out: dict[str, float] = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def http_status(self, path: str) -> int:
        try:
            return int(
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5
                ).status
            )
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Signal, wait up to `timeout`, then SIGKILL — and say so with a warning (shown
        in pytest's summary), so a gateway that does not stop by itself cannot hide."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                warnings.warn(
                    f"gateway {self.gateway_id} (pid {self.proc.pid}) did not exit within "
                    f"{timeout:.0f}s of signal {sig}: SIGKILLed",
                    GatewayKilled,
                    stacklevel=2,
                )


def start_gateway(
    nats_url: str,
    prefix: str,
    gateway_id: str,
    *,
    stderr_file: Path | None = None,
    **overrides: Any,
) -> GatewayProcess:
    """`overrides` become SAILCAST_* variables; `stderr_file` receives the gateway's log
    (by default it goes to the test run's stderr)."""
    env = dict(os.environ)
    env.update(
        SAILCAST_NATS_URL=nats_url,
        SAILCAST_PREFIX=prefix,
        SAILCAST_GATEWAY_ID=gateway_id,
        SAILCAST_PORT="0",
        SAILCAST_METRICS_PORT="0",
        SAILCAST_HOST="127.0.0.1",
        SAILCAST_UNSUBSCRIBE_LINGER_S="0.05",
        SAILCAST_HEARTBEAT_INTERVAL_S="0.5",
        SAILCAST_READY_CHECK_INTERVAL_S="0.5",
        SAILCAST_DRAIN_DELAY_S="0",
        SAILCAST_DRAIN_TIMEOUT_S="2",
        SAILCAST_LOG_LEVEL="WARNING",
    )
    for key, value in overrides.items():
        env["SAILCAST_" + key.upper()] = str(value)
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(stderr_file.open("ab")) if stderr_file else None
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway"], env=env, stdout=subprocess.PIPE, stderr=stderr
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(b"{"):
            break
        if proc.poll() is not None:
            raise RuntimeError(f"gateway {gateway_id} exited with {proc.returncode}")
    ready = orjson.loads(line)
    return GatewayProcess(
        proc,
        gateway_id,
        int(ready["port"]),
        int(ready["metrics_port"]),
        int(ready.get("api_port", 0)),
    )


@dataclass
class RecordingClient:
    """A real python-socketio client that records every event in arrival order."""

    client: socketio.AsyncClient
    events: list[tuple[str, Any]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sid(self) -> str:
        sid = self.client.get_sid()
        assert sid, "client is not connected"
        return str(sid)

    def named(self, event: str) -> list[Any]:
        return [d for e, d in self.events if e == event]

    async def wait_for(
        self, predicate: Callable[[list[tuple[str, Any]]], bool], timeout: float = 5.0
    ) -> list[tuple[str, Any]]:
        """Wait until predicate(events) holds; fail with what arrived if it never does."""
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = repr(self.events)
                if len(got) > 2000:
                    got = f"{len(self.events)} events, last: {repr(self.events[-3:])[:1500]}"
                raise AssertionError(f"condition not met in {timeout}s; got {got}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.events

    async def wait_count(self, n: int, timeout: float = 5.0) -> list[tuple[str, Any]]:
        return await self.wait_for(lambda ev: len(ev) >= n, timeout)

    async def disconnect(self) -> None:
        if self.client.connected:
            await self.client.disconnect()


async def connect_client(url: str, transport: str = "websocket") -> RecordingClient:
    client = socketio.AsyncClient(reconnection=False)
    rc = RecordingClient(client)

    async def on_any(event: str, *args: Any) -> None:
        rc.events.append((event, args[0] if len(args) == 1 else list(args)))
        rc._changed.set()

    client.on("*", on_any)
    transports = ["polling", "websocket"] if transport == "polling" else ["websocket"]
    await client.connect(url, transports=transports, wait_timeout=10)
    return rc


async def quiet(clients: list[RecordingClient], publisher: Any, marker_room: str = "") -> None:
    """Prove no stray message is in flight: send a marker through every client's own
    room and wait for it. NATS keeps one publisher's order per subscriber, so anything
    published before the marker has arrived once the marker has."""
    for c in clients:
        await publisher.sockets.broadcast(c.sid, "__marker__", {"n": len(c.events)})
    for c in clients:
        await c.wait_for(lambda ev: bool(ev) and ev[-1][0] == "__marker__")
    for c in clients:
        c.events[:] = [e for e in c.events if e[0] != "__marker__"]


def unique_prefix(name: str) -> str:
    token = re.sub(r"[^A-Za-z0-9_-]", "_", name)[-40:]
    return f"t{os.getpid()}_{int(time.monotonic() * 1000) % 10**8}_{token}"


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve an in-process aiohttp app on a free loopback port: (runner, base URL).
    The caller cleans the runner up."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"
