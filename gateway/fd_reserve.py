"""A reserve of file descriptors the Socket.IO port may not take.

Why: the ops port (/healthz, /readyz, /metrics), NATS reconnects and the files the
process opens share one RLIMIT_NOFILE with every client connection. When clients
(idle or hostile TCP connections, say) take the last descriptors, accept() fails for
every listener and the health checks die with the clients. So the Socket.IO listener
hands each accepted connection to aiohttp only while the process keeps `reserve`
descriptors free; past that, the connection is closed at once (counted in
refusals_total{reason="fd_reserve"} and logged at most every few seconds), and the
ops port keeps answering. Connections that send nothing are closed after
--handshake-timeout-s by aiohttp itself (its keep-alive timer runs from the accept).

Counting is cheap: the open descriptors are measured once at start, the limit is read
with one getrlimit per accept (an operator may change it at runtime), and the client
connections are counted from aiohttp's list of open connections (a copy: O(n)) only
when an upper bound — the last count plus the accepts since — reaches the room left,
so far from the limit an accept costs no count at all.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

FD_RESERVE: Final = "fd_reserve"
"""The refusals_total reason of a client connection closed to keep the reserve."""
_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


def open_fds() -> int:
    """Descriptors this process has open now (Linux /proc; elsewhere /dev/fd)."""
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(path))
        except OSError:
            continue
    return 0


class _Refused(asyncio.Protocol):
    """Answers 503 and closes: the descriptor is free again at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()


class FdReserve:
    """The Socket.IO listener's protocol factory, refusing connections that would eat
    into the reserve."""

    def __init__(
        self, server: web.Server, reserve: int, on_refused: Callable[[int, int], None]
    ) -> None:
        self._server = server
        self._reserve = reserve
        self._base = open_fds()
        self._on_refused = on_refused
        self._counted = 0
        """Client connections at the last count, plus those accepted since."""

    def _allowed(self) -> int:
        """Client connections the process may hold and keep the reserve free."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 1 << 30
        return soft - self._reserve - self._base

    def __call__(self) -> Any:
        allowed = self._allowed()
        if self._counted >= allowed:  # the upper bound says maybe: count for real
            self._counted = len(self._server.connections)
            if self._counted >= allowed:
                self._on_refused(self._counted, self._reserve)
                return _Refused()
        self._counted += 1
        return self._server()
