"""A hostile client process for test_hostile_input.py: floods a gateway from N websockets.

    python -m tests.faults.flood_client <port> <sockets> <kind> <seconds> <rate> [<xff>]

`kind`: `vreq` (virtual requests with an ack, what sails.io.js sends for io.socket.get)
or `event` (a custom client event, no ack). Each socket connects (Engine.IO v4 +
Socket.IO CONNECT), prints nothing, then writes one pre-built frame `rate` times a
second in all (or as fast as the gateway takes them, if slower), reading and dropping
whatever comes back, for `seconds`; `xff` is sent as X-Forwarded-For. It runs in
a process of its own so that the flood does not share the measuring test's event loop.
At the end it prints one JSON line: frames written, seconds, sockets still open.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import sys
import time

import orjson

BATCH = 64
SNDBUF = 64 * 1024
"""A small send buffer: once the gateway stops reading, the flooder blocks instead of
spinning to fill megabytes of loopback buffers (its CPU is the test machine's too)."""
PAYLOADS = {
    "vreq": b'421["get",{"method":"get","url":"/work/flood","headers":{},"data":{}}]',
    "event": b'42["chat",{"text":"flood"}]',
}


def frame(payload: bytes) -> bytes:
    """A masked text frame with the all-zero mask (valid, and the payload stays as is)."""
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    return head + b"\0\0\0\0" + payload


async def read_frames(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read and drop the server's frames (answering Engine.IO pings) until it closes."""
    try:
        while True:
            head = await reader.readexactly(2)
            n = head[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            data = await reader.readexactly(n)
            if head[0] & 0x0F == 8:
                return
            if data == b"2":
                writer.write(frame(b"3"))
    except (asyncio.IncompleteReadError, ConnectionError):
        return


async def one_socket(
    port: int, kind: str, until: float, rate: float, xff: str, sent: list[int]
) -> bool:
    """One flooding socket; True if the gateway still had it open at the end."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"X-Forwarded-For: {xff}\r\n" if xff else ""
    writer.write(
        (
            "GET /socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    writer.write(frame(b"40"))
    reading = asyncio.ensure_future(read_frames(reader, writer))
    batch = frame(PAYLOADS[kind]) * BATCH
    due = time.monotonic()
    try:
        while (left := until - time.monotonic()) > 0 and not reading.done():
            due += BATCH / rate
            await asyncio.sleep(max(0.0, min(due - time.monotonic(), left)))
            writer.write(batch)
            await asyncio.wait_for(writer.drain(), left)  # held by TCP when not read
            sent[0] += BATCH
    except (ConnectionError, TimeoutError):
        pass
    open_at_end = not reading.done()
    writer.transport.abort()
    reading.cancel()
    return open_at_end


async def main(port: int, sockets: int, kind: str, seconds: float, rate: float, xff: str) -> None:
    sent = [0]
    started = time.monotonic()
    until = started + seconds
    still_open = await asyncio.gather(
        *(one_socket(port, kind, until, rate / sockets, xff, sent) for _ in range(sockets))
    )
    out = {"frames": sent[0], "seconds": time.monotonic() - started, "open": sum(still_open)}
    print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            int(args[0]),
            int(args[1]),
            args[2],
            float(args[3]),
            float(args[4]),
            args[5] if len(args) > 5 else "",
        )
    )
