"""Reference (floor): the least a Python process can do for a NATS-backed Socket.IO fan-out.

No framework: an ``asyncio.Protocol`` per connection (on uvloop unless ``--loop asyncio``)
that answers the HTTP websocket upgrade itself (``Sec-WebSocket-Accept``), reads masked
client frames from ``data_received`` and speaks just enough Engine.IO v4 / Socket.IO v5
for the load generator: open packet, ``40`` connect reply, server pings ``2`` answered
by ``3`` (a socket silent for a whole ping interval is closed), ``41`` / close frames.

Fan-out: one NATS subscription per room with local members, exactly as the plain
reference (same subjects, same nats-py client, same publisher). Per broker message ONE
unmasked ``42[...]`` websocket frame is built; the frames of one event-loop tick are
written to each member's transport once (one ``transport.write`` per socket per tick,
so one send syscall). Joins arrive on ``<prefix>.ctl`` as ``[[sid, room], ...]``.

Idle memory is the point of a floor too: no task, timer or buffer per connection, only
a ``__slots__`` object next to the event loop's transport; one timer pings everyone.

Run as ``python -m bench.systems.floor_server --nats-url URL --prefix P [--loop asyncio]``;
the ready line names the loop it runs on.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Final, cast

import nats
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from bench.procstat import running_loop_name

PING_INTERVAL_S: Final = 25.0
PING_TIMEOUT_S: Final = 20.0
MAX_PAYLOAD_BYTES: Final = 1_000_000
MAX_REQUEST_HEAD_BYTES: Final = 8192
MAX_BUFFERED_BYTES: Final = 4 * 1024 * 1024
"""Outbound bytes a socket may have waiting before it is cut off (the gateway's default
``max_buffered_bytes``): the loop's write buffer is the only per-socket buffer."""
WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA


# -- pure websocket / HTTP helpers (unit-tested) ------------------------------------


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.strip() + WS_GUID).digest())


def server_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, unmasked server-to-client frame (servers never mask)."""
    n = len(payload)
    b0 = 0x80 | opcode
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 1 << 16:
        return bytes((b0, 126)) + n.to_bytes(2, "big") + payload
    return bytes((b0, 127)) + n.to_bytes(8, "big") + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (one big-int XOR, no per-byte loop)."""
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def upgrade_key(head: bytes) -> bytes | None:
    """The websocket key of an Engine.IO v4 websocket upgrade request, or None.

    ``head`` is the request up to (not including) the blank line. Only
    ``GET /socket.io/?EIO=4&transport=websocket`` with ``Upgrade: websocket`` and
    ``Sec-WebSocket-Version: 13`` qualifies: that is all the load generator sends.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or not parts[1].startswith(b"/socket.io/?"):
        return None
    query = set(parts[1].partition(b"?")[2].split(b"&"))
    if b"EIO=4" not in query or b"transport=websocket" not in query:
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get(b"upgrade", b"").lower() != b"websocket":
        return None
    if headers.get(b"sec-websocket-version") != b"13":
        return None
    return headers.get(b"sec-websocket-key") or None


def upgrade_response(key: bytes) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
    )


BAD_REQUEST: Final = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 31\r\n"
    b"Connection: close\r\n\r\nonly EIO=4 websocket transport\n"
)
PING_FRAME: Final = server_frame(b"2")
OPEN_PACKET: Final = b"0" + orjson.dumps(
    {
        "upgrades": [],
        "pingInterval": int(PING_INTERVAL_S * 1000),
        "pingTimeout": int(PING_TIMEOUT_S * 1000),
        "maxPayload": MAX_PAYLOAD_BYTES,
    }
)


def open_frame() -> bytes:
    """The Engine.IO open packet with a fresh session id, as one websocket frame."""
    sid = orjson.dumps(secrets.token_urlsafe(15))
    return server_frame(b'0{"sid":' + sid + b"," + OPEN_PACKET[2:])


# -- connections, rooms, fan-out ----------------------------------------------------


class Room:
    """A room with local members: who gets its frames and the NATS subscription that
    brings them (dropped with the last member)."""

    __slots__ = ("members", "name", "sub")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: set[Conn] = set()
        self.sub: Subscription | None = None


class Conn(asyncio.Protocol):
    """One websocket client: its transport and a few flags, nothing else while idle.

    ``transport`` is None once the socket is closed or lost; by then it is in no room,
    so the writer never sees it.
    """

    __slots__ = ("alive", "buf", "hub", "pending", "rooms", "sid", "transport", "upgraded")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.alive = True
        """Heard from since the last ping (any frame counts, like a pong)."""
        self.sid: str | None = None
        self.rooms: list[Room] | None = None
        self.pending: list[bytes] | None = None
        """Frames of the tick being written (only when a tick carries several rooms)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence no isinstance.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=MAX_BUFFERED_BYTES)

    def pause_writing(self) -> None:
        """The write buffer passed ``MAX_BUFFERED_BYTES``: a client that stopped reading is
        cut off (bounded memory at no cost per delivery: the loop checks the bound).

        Called from inside ``transport.write``, i.e. while the writer iterates over a
        room's members: leaving the room now would change the set under it, so the cut
        comes right after this tick's writes.
        """
        asyncio.get_running_loop().call_soon(self._cut_off)

    def _cut_off(self) -> None:
        self.close(abort=True)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_REQUEST_HEAD_BYTES:
                    self._refuse()
                else:
                    self.buf = buf
                return
            key = upgrade_key(buf[:end])
            if key is None:
                self._refuse()
                return
            self._write(upgrade_response(key) + open_frame())
            self.upgraded = True
            self.hub.conns.add(self)
            buf = buf[end + 4 :]
        self.alive = True
        pos, size = 0, len(buf)
        while size - pos >= 6:  # client frames carry a 4-byte mask
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if n > MAX_PAYLOAD_BYTES or not b1 & 0x80 or not b0 & 0x80:
                self.close()  # oversized, unmasked or fragmented: not this protocol subset
                return
            start = pos + head + 4
            end = start + n
            if end > size:
                break
            self._frame(b0 & 0x0F, unmask(buf[start:end], buf[start - 4 : start]))
            if self.transport is None:
                return
            pos = end
        self.buf = buf[pos:]

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            if payload == b"40" or payload.startswith(b"40{"):  # default namespace only
                if self.sid is None:
                    self.sid = sid = secrets.token_urlsafe(15)
                    self.hub.sockets[sid] = self
                    self._write(server_frame(b'40{"sid":"' + sid.encode() + b'"}'))
            elif payload in (b"41", b"1"):
                self.close()
            # "3" (pong) only keeps the session alive; client events need nothing here.
        elif opcode == OP_PING:
            self._write(server_frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            self._write(server_frame(payload[:2], OP_CLOSE))
            self.close()
        elif opcode == OP_CONT:
            self.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _refuse(self) -> None:
        self._write(BAD_REQUEST)
        self.close()

    def close(self, *, abort: bool = False) -> None:
        """Leave every room now and close the transport: queued writes still go out,
        unless ``abort`` (a client that stopped reading would hold it open forever)."""
        if self.transport is not None:
            transport, self.transport = self.transport, None
            self.hub.forget(self)
            if abort:
                transport.abort()
            else:
                transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport = None
            self.hub.forget(self)


class Hub:
    """Local sockets, rooms and their subscriptions, and the per-tick writer."""

    def __init__(self, nc: NATS, prefix: str) -> None:
        self.nc = nc
        self.prefix = prefix
        self.conns: set[Conn] = set()
        """Upgraded connections (Engine.IO sessions), for the pinger."""
        self.sockets: dict[str, Conn] = {}
        """Socket.IO-connected ones by sid, for joins."""
        self.rooms: dict[str, Room] = {}
        self._tick: list[tuple[Room, bytes]] = []
        self._flush_due = False
        self._loop = asyncio.get_running_loop()
        self._background: set[asyncio.Future[None]] = set()

    # -- membership ----------------------------------------------------------------

    async def on_control(self, msg: Msg) -> None:
        for sid, room in orjson.loads(msg.data):
            conn = self.sockets.get(sid)
            if conn is not None:
                await self.join(conn, room)

    async def join(self, conn: Conn, name: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
            room.sub = await self.nc.subscribe(
                f"{self.prefix}.room.{name}", cb=self._deliverer(room)
            )
        if conn.transport is None or conn in room.members:  # closed while we subscribed
            self._drop_if_empty(room)
            return
        self.flush()  # frames published before the join are not the new member's
        room.members.add(conn)
        if conn.rooms is None:
            conn.rooms = []
        conn.rooms.append(room)

    def forget(self, conn: Conn) -> None:
        """A closed socket leaves its rooms (it gets nothing more, not even this tick's)."""
        self.conns.discard(conn)
        if conn.sid is not None:
            self.sockets.pop(conn.sid, None)
        for room in conn.rooms or ():
            room.members.discard(conn)
            self._drop_if_empty(room)
        conn.rooms = None

    def _drop_if_empty(self, room: Room) -> None:
        if not room.members and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            if room.sub is not None:
                task = asyncio.ensure_future(self._unsubscribe(room.sub))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    @staticmethod
    async def _unsubscribe(sub: Subscription) -> None:
        with contextlib.suppress(NatsError):  # closed connection: nothing to undo
            await sub.unsubscribe()

    # -- fan-out -------------------------------------------------------------------

    def _deliverer(self, room: Room) -> Callable[[Msg], Awaitable[None]]:
        async def deliver(msg: Msg) -> None:
            # The payload is already ["event", data]: one frame for every member.
            self._tick.append((room, server_frame(b"42" + msg.data)))
            if not self._flush_due:
                self._flush_due = True
                self._loop.call_soon(self.flush)

        return deliver

    def flush(self) -> None:
        """Write the tick's frames: one ``transport.write`` per member socket."""
        self._flush_due = False
        tick = self._tick
        if not tick:
            return
        self._tick = []
        first = tick[0][0]
        if all(room is first for room, _ in tick):  # S1, and any tick of one room
            blob = tick[0][1] if len(tick) == 1 else b"".join([f for _, f in tick])
            for conn in first.members:  # no cast() here: a call per recipient
                conn.transport.write(blob)  # type: ignore[union-attr]  # members are open
            return
        dirty: list[Conn] = []
        for room, frame in tick:
            for conn in room.members:
                pending = conn.pending
                if pending is None:
                    conn.pending = [frame]
                    dirty.append(conn)
                else:
                    pending.append(frame)
        for conn in dirty:
            frames = conn.pending or []
            conn.pending = None
            blob = frames[0] if len(frames) == 1 else b"".join(frames)
            conn.transport.write(blob)  # type: ignore[union-attr]

    # -- heartbeat -----------------------------------------------------------------

    def ping(self) -> None:
        """Every interval: close sockets silent since the last ping, ping the others."""
        self._loop.call_later(PING_INTERVAL_S, self.ping)
        for conn in tuple(self.conns):
            if conn.alive:
                conn.alive = False
                conn._write(PING_FRAME)
            else:
                conn.close()


async def serve(nats_url: str, prefix: str, host: str, port: int) -> None:
    nc = await nats.connect(nats_url, name="bench-floor", max_reconnect_attempts=-1)
    hub = Hub(nc, prefix)
    await nc.subscribe(f"{prefix}.ctl", cb=hub.on_control)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(hub), host, port, backlog=1024)
    bound_port = server.sockets[0].getsockname()[1]
    loop.call_later(PING_INTERVAL_S, hub.ping)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = {"event": "ready", "host": host, "port": bound_port, "loop": running_loop_name()}
    sys.stdout.write(orjson.dumps(ready).decode() + "\n")
    sys.stdout.flush()
    await stop.wait()
    server.close()
    for conn in tuple(hub.conns):
        conn.close()
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    coro = serve(args.nats_url, args.prefix, args.host, args.port)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
