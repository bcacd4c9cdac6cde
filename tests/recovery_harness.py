"""The npm socket.io-client harness of the recovery tests (tests/e2e/test_recovery.py,
tests/faults/test_recovery_cluster.py): a TCP proxy that cuts a client's connection and
points its next one at another gateway, and a long-lived Node client
(tests/e2e/js/recovery_client.js) read line by line. The fixtures `proxies` and
`node_clients` (tests/conftest.py) make them and clean them up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Final

import pytest

JS_DIR: Final = Path(__file__).parent / "e2e" / "js"
STEP_TIMEOUT_S: Final = 15.0


class CutProxy:
    """127.0.0.1:<port> → 127.0.0.1:<target>, byte for byte, with a few scissors."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.down = False
        self.port = 0
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._held: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.append(pair)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        if not dst.transport.is_closing() and dst not in self._held:
            dst.transport.abort()

    def cut(self, *, tell_gateway: bool = True) -> None:
        """Drop every client connection; the gateway's side is closed too, or left
        open and unread (the gateway sees nothing: a dead network path)."""
        for client, upstream in self._pairs:
            if not tell_gateway:
                self._held.append(upstream)
            client.transport.abort()
            if tell_gateway:
                upstream.transport.abort()
        self._pairs.clear()

    async def close(self) -> None:
        self.cut()
        for w in self._held:
            w.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()


class NodeClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.steps: list[dict[str, Any]] = []

    async def next(self, step: str) -> dict[str, Any]:
        """The next line of kind `step`; the lines before it are kept in `steps`."""
        assert self.proc.stdout is not None
        while True:
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), STEP_TIMEOUT_S)
            except TimeoutError:
                raise AssertionError(
                    f"no {step!r} in {STEP_TIMEOUT_S}s: {self.steps[-8:]}"
                ) from None
            if not line:
                err = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"client exited: {self.steps[-5:]} {err.decode()[-2000:]}")
            if not line.startswith(b"{"):
                continue
            data: dict[str, Any] = json.loads(line)
            assert data["step"] != "error", data
            self.steps.append(data)
            if data["step"] == step:
                return data

    async def events(self, n: int) -> list[dict[str, Any]]:
        """Every event so far, once there are `n`."""
        while len(self.received()) < n:
            await self.next("event")
        return self.received()

    def received(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["step"] == "event"]

    def command(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def start_node_client(url: str, stack: str, events: str = "m", token: str = "") -> NodeClient:
    """recovery_client.js on `url` (stacks: v4, sails-addon, sails-stock); fails the
    test when the npm clients are not installed (`bash tests/e2e/setup.sh`)."""
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "socket.io-client-v4").is_dir():
        pytest.fail("the npm clients are missing: run `bash tests/e2e/setup.sh` (needs node)")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS_DIR / "recovery_client.js"),
        url,
        stack,
        events,
        *([token] if token else []),
        cwd=JS_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return NodeClient(proc)


def numbers(events: list[dict[str, Any]]) -> list[int]:
    """The `n` of each event's first argument (what the tests publish)."""
    return [e["args"][0]["n"] for e in events]


async def away(proxy: CutProxy, client: NodeClient, *, tell_gateway: bool = True) -> None:
    """Cut the client off and keep it off until `proxy.down` is cleared."""
    proxy.down = True
    proxy.cut(tell_gateway=tell_gateway)
    await client.next("disconnect")
