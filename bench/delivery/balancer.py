"""A round-robin TCP balancer in front of the servers, as a Kubernetes Service is.

Each new client connection goes to the next backend that accepts a TCP connection (a
killed or restarting server refuses, so it is skipped), so a reconnect may land on any
live server. Bytes are piped both ways; when either side ends, both are closed. The
backend list can be replaced while running (a restarted gateway has a new port).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Final

PIPE_CHUNK_BYTES: Final = 65536


class Balancer:
    """Loopback TCP balancer; ``port`` is set by :meth:`start`."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = list(backends)
        self.port = 0
        self.routed: Counter[int] = Counter()
        """Connections handed to each backend port."""
        self.refused = 0
        """Client connections closed because no backend accepted."""
        self.errors: Counter[str] = Counter()
        """Failed backend connects, by port and error."""
        self._next = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Balancer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=4096)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def replace(self, old: int | None, new: int | None) -> None:
        """Take backend ``old`` out of the rotation and/or put ``new`` in (a server
        stopping, or back on a new port), as a Service's endpoints follow its pods."""
        self.backends = [p for p in self.backends if p != old]
        if new is not None:
            self.backends.append(new)

    async def _connect_backend(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        # Each connection walks the whole list from its own start: a shared cursor,
        # advanced by concurrent accepts, could show one connection only dead backends.
        backends = list(self.backends)
        start = self._next
        self._next += 1
        for k in range(len(backends)):
            port = backends[(start + k) % len(backends)]
            try:
                streams = await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                self.errors[f"{port}: {type(exc).__name__}: {exc.strerror or exc}"] += 1
                continue
            self.routed[port] += 1
            return streams
        return None

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        backend = await self._connect_backend()
        if backend is None:
            self.refused += 1
            c_writer.transport.abort()
            return
        b_reader, b_writer = backend
        pipes = {
            asyncio.ensure_future(_pipe(c_reader, b_writer)),
            asyncio.ensure_future(_pipe(b_reader, c_writer)),
        }
        self._tasks |= pipes
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pipes:
                p.cancel()
            for w in (b_writer, c_writer):
                w.transport.abort()
            self._tasks -= pipes

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(PIPE_CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
