"""Many websocket clients that read as fast as the kernel hands them bytes, in a process
of their own (so they do not compete with the test's event loop): the room of a fanout
burst (tests/faults/test_fanout_burst.py).

`python -m tests.faults.burst_readers PORT N PREFIX`: connects N Socket.IO clients,
prints their sids as one JSON line, then counts, per client, the websocket frames whose
payload starts with PREFIX; a line on stdin prints the counts (JSON; -1 for a client
whose connection the server closed) and exits.
"""

from __future__ import annotations

import asyncio
import struct
import sys

import orjson

from tests.faults.faultkit import RawWebSocket


class FrameCounter(asyncio.Protocol):
    """Parses only frame headers and skips payloads: reading costs one copy."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.count = 0
        self.closed = False
        self._hdr = b""  # a header split across reads
        self._skip = 0  # payload bytes still to skip
        self._want = 0  # payload bytes still to compare with the prefix
        self._head = b""

    def data_received(self, data: bytes) -> None:
        i, end = 0, len(data)
        while i < end:
            if self._skip:
                take = min(self._skip, end - i)
                if self._want:
                    grab = min(self._want, take)
                    self._head += data[i : i + grab]
                    self._want -= grab
                    if not self._want:
                        self._check()
                self._skip -= take
                i += take
                continue
            h = self._hdr + data[i : i + 10]
            parsed = _header(h)
            if parsed is None:
                self._hdr = h
                return
            size, n = parsed
            i += size - len(self._hdr)
            self._hdr = b""
            self._skip = n
            self._want = min(len(self.prefix), n)
            self._head = b""
            if not n:
                self._check()

    def _check(self) -> None:
        if self._head == self.prefix:
            self.count += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


def _header(h: bytes) -> tuple[int, int] | None:
    """(header size, payload size) of an unmasked server frame, or None if incomplete."""
    if len(h) < 2:
        return None
    n = h[1] & 0x7F
    if n == 126:
        return None if len(h) < 4 else (4, struct.unpack("!H", h[2:4])[0])
    if n == 127:
        return None if len(h) < 10 else (10, struct.unpack("!Q", h[2:10])[0])
    return 2, n


async def main(port: int, n: int, prefix: bytes) -> None:
    loop = asyncio.get_running_loop()
    counters: list[FrameCounter] = []
    sids: list[str] = []
    keep: list[RawWebSocket] = []  # a collected StreamWriter would close its transport
    for _ in range(n):
        ws = await RawWebSocket.open(port)
        keep.append(ws)
        sids.append(await ws.eio_connect())
        counter = FrameCounter(prefix)
        # hand the socket over to the counting protocol (nothing is buffered yet: the
        # server sends nothing more until something is published)
        transport = ws.writer.transport
        transport.set_protocol(counter)
        counters.append(counter)
    print(orjson.dumps(sids).decode(), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    print(orjson.dumps([-1 if c.closed else c.count for c in counters]).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()))
