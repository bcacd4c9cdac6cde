"""Per-socket outbound path: bounded, and direct to the wire when it can be.

python-engineio gives each socket an unbounded queue drained by a writer task, so
every packet to every socket costs a task wake-up and its own frame encoding. Here
each socket gets an `OutboundQueue` instead:

* when the socket is on websocket and nothing is queued or being written ahead of a
  packet, a text MESSAGE packet goes straight to the TCP transport as a websocket
  frame that is built once per packet and shared by every recipient (server frames
  are unmasked, and we decline permessage-deflate). Frames for one socket within one
  event-loop tick are gathered and written together at the end of the tick: NATS
  hands the gateway many messages per read, and the send syscall per write is most
  of the cost of a delivery;
* once an Engine.IO v4 socket runs on websocket (eio4.py: no writer task), every
  packet — control packets and binary ones too — is written that way, in order;
* otherwise (polling, during an upgrade, a v3 socket while its writer is busy) it goes
  through the queue as before, which keeps order; control packets of a v3 socket
  always take the queue, which keeps its writer task ticking;
* both paths are bounded; a socket over either bound has stopped reading and is cut
  off. The queue holds packet objects and counts only MESSAGE payloads as bytes
  (control packets count none, and an object costs more than a small payload), so
  `--max-queued-messages` is what bounds it for many small or control packets. The
  direct path is bounded by bytes alone (the transport's write buffer plus this
  tick's frames, against `--max-buffered-bytes`), and that is also a message bound:
  it holds frame bytes, counted with their headers, handed to the transport once per
  tick as one buffer (or one frame shared by every recipient and counted for each),
  so no per-message object outlives the tick and memory follows the bytes counted.
  Counting messages there would need per-recipient bookkeeping of what the kernel
  has taken, which the transport does not report. Pinned by
  tests/integration/test_slow_clients.py (a stalled client flooded with ~100-byte
  messages is cut off by the byte bound).

Installed per server instance (`install`), so the Engine.IO v3 support can still
adapt the server's class. This module and fanout.py are the only ones that touch
Engine.IO socket internals; pinned by tests/integration/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
from collections.abc import Callable
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, web
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp

from gateway import refusals

SlowHandler = Callable[[Any, str], None]
"""Called with (engine.io socket or None, reason) when a socket exceeds a bound."""

_FRAME_ATTR: Final = "_sailcast_frame"
GOING_AWAY_TIMEOUT_S: Final = 1.0
CLOSE_WAIT_S: Final = 0.5


TEXT: Final = 0x81
"""FIN + text opcode."""
BINARY: Final = 0x82
"""FIN + binary opcode."""


def ws_frame(payload: bytes, first_byte: int = TEXT) -> bytes:
    """An unmasked, final, uncompressed websocket data frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first_byte, n)
    elif n < 65536:
        header = struct.pack("!BBH", first_byte, 126, n)
    else:
        header = struct.pack("!BBQ", first_byte, 127, n)
    return header + payload


def frame_of(pkt: Any) -> bytes:
    """The frame of a packet, built on first use and kept on the packet (a fanout
    packet is shared by every recipient)."""
    frame: bytes | None = getattr(pkt, _FRAME_ATTR, None)
    if frame is None:
        encoded = pkt.encode()
        frame = ws_frame(encoded, BINARY) if pkt.binary else ws_frame(encoded.encode())
        setattr(pkt, _FRAME_ATTR, frame)
    return frame


class Coalescer:
    """The sockets that got frames during this tick; written out once, at its end."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[OutboundQueue] = []
        self._scheduled = False

    def mark(self, queue: OutboundQueue) -> None:
        self._dirty.append(queue)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_all)

    def flush_all(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for queue in dirty:
            queue.flush()


class OutboundQueue:
    """A socket's outbound packets, with the part of asyncio.Queue's API python-engineio
    uses (put, put_nowait, get, get_nowait, task_done, join, qsize). asyncio.Queue keeps
    four deques per socket (3 KB); here the packet deque and the waiters exist only
    while something waits, which on websocket is only until the session starts."""

    __slots__ = (
        "_all_direct",
        "_closing",
        "_coalescer",
        "_frames",
        "_frames_bytes",
        "_getters",
        "_handed",
        "_items",
        "_joiners",
        "_on_slow",
        "_queued_bytes",
        "_socket",
        "_transport",
        "_unfinished",
        "_written",
        "_ws",
        "cut_off",
        "max_bytes",
        "max_messages",
    )

    def __init__(
        self,
        *,
        max_messages: int,
        max_bytes: int,
        on_slow: SlowHandler,
        coalescer: Coalescer | None = None,
    ) -> None:
        self._items: collections.deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._joiners: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._coalescer = coalescer or Coalescer()
        self._frames: list[bytes] = []
        self._frames_bytes = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._on_slow = on_slow
        self._socket: Any = None
        self._transport: asyncio.Transport | None = None
        self._ws: web.WebSocketResponse | None = None
        self._queued_bytes = 0
        self._handed = 0  # packets given to engine.io's writer
        self._written = 0  # ... and written by it
        self._all_direct = False  # eio4.py runs the socket: there is no writer
        self._closing: asyncio.Future[bool] | None = None
        self.cut_off = False

    # -- wiring, done by DirectWebSocket ---------------------------------------------
    def attach(self, socket: Any, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self._socket, self._ws, self._transport = socket, ws, transport

    async def going_away(self) -> bool:
        """Close the websocket with 1001 and no Engine.IO or Socket.IO goodbye, as a
        restarting server would; every client library then reconnects. False when
        the socket is not on websocket."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        self.flush()  # what was sent this tick still goes out before the close
        self.cut_off = True
        try:
            await asyncio.wait_for(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"server going away"),
                GOING_AWAY_TIMEOUT_S,
            )
        except (TimeoutError, ConnectionError):
            if self._transport is not None:
                self._transport.abort()
        return True

    @property
    def direct_only(self) -> bool:
        return self._all_direct

    def go_direct(self) -> bool:
        """From now on write every packet straight to the websocket (eio4.py runs this
        socket without a writer task); what was queued before goes out first. False
        when no websocket is attached."""
        if self._ws is None or self._transport is None:
            return False
        self._all_direct = True
        while self.qsize():
            item = self.get_nowait()
            self.task_done()
            if item is None:
                self._close_websocket()
                break
            self._write(frame_of(item))
        return True

    def writer_sent(self) -> None:
        if self._handed > self._written:
            self._written += 1

    # -- the queue API engine.io uses --------------------------------------------------
    def put_nowait(self, item: Any) -> None:
        if item is None:  # engine.io's stop signal for its writer
            if self._all_direct:
                self._close_websocket()
            else:
                self._enqueue(item)
            return
        if self.cut_off:
            return
        if self._all_direct or self._direct_ok(item):
            self._write(frame_of(item))
            return
        size = len(item.encode()) if item.packet_type == eio_packet.MESSAGE else 0
        if self.qsize() >= self.max_messages or self._queued_bytes + size > self.max_bytes:
            self._slow("queue")
            return
        self._queued_bytes += size
        self._enqueue(item)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        """The next packet, once there is one (a long-poll waits here)."""
        while not self._items:
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    _wake_one(self._getters)  # pass the item on to the next waiter
                raise
        return self.get_nowait()

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            joiners, self._joiners = self._joiners, None
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    async def join(self) -> None:
        """engine.io's close(wait=True) waits here for a client to take the CLOSE packet.
        A polling client whose POST was refused never polls again, which left the
        request handler (and shutdown) hanging forever; bounded now."""
        if self._unfinished == 0:
            return
        joiner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._joiners is None:
            self._joiners = []
        self._joiners.append(joiner)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(joiner, CLOSE_WAIT_S)

    def _enqueue(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        self._unfinished += 1
        if self._getters:
            _wake_one(self._getters)

    def _write(self, frame: bytes) -> None:
        """Gather a frame for the end of this tick, or cut the socket off when its
        transport already holds more than the bound (it stopped reading)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() + self._frames_bytes > self.max_bytes:
            self._slow("write_buffer")
            return
        if not self._frames:
            self._coalescer.mark(self)
        self._frames.append(frame)
        self._frames_bytes += len(frame)

    def _close_websocket(self) -> None:
        """What engine.io's writer does when told to stop: close the websocket (after
        what this tick wrote)."""
        self.flush()
        ws = self._ws
        if ws is not None and not ws.closed and self._closing is None:
            self._closing = asyncio.ensure_future(ws.close())

    def flush(self) -> None:
        """Write the frames gathered this tick in one call (one send syscall)."""
        frames = self._frames
        if not frames:
            return
        self._frames = []
        self._frames_bytes = 0
        transport = self._transport
        if transport is None or transport.is_closing() or self.cut_off:
            return
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def get_nowait(self) -> Any:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None  # an idle socket keeps no deque
        if item is not None:
            self._handed += 1
            if item.packet_type == eio_packet.MESSAGE:
                self._queued_bytes -= len(item.encode())
        return item

    def _direct_ok(self, item: Any) -> bool:
        ws = self._ws
        return (
            ws is not None
            and item.packet_type == eio_packet.MESSAGE
            and not item.binary
            and self._socket.upgraded
            and not self._socket.upgrading
            and self._handed == self._written
            and self.qsize() == 0
            and not ws.closed
            and self._transport is not None
            and not self._transport.is_closing()
        )

    def _slow(self, reason: str) -> None:
        if self.cut_off:
            return
        self.cut_off = True
        self._frames = []
        self._frames_bytes = 0
        if self._transport is not None:
            self._transport.abort()  # drop what the client never read
        self._on_slow(self._socket, reason)


class DirectWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """python-engineio's aiohttp websocket, wired to the socket's OutboundQueue."""

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        self.environ = environ
        socket = getattr(self.handler, "__self__", None)
        queue = getattr(socket, "queue", None)
        if isinstance(queue, OutboundQueue) and request.transport is not None:
            queue.attach(socket, self._sock, request.transport)
            self._queue: OutboundQueue | None = queue
        else:
            self._queue = None
        await self.handler(self)
        return self._sock

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await self._sock.send_bytes(message)
        else:
            await self._sock.send_str(message)
        if self._queue is not None:
            self._queue.writer_sent()

    async def wait(self, timeout: float | None = None) -> str | bytes:
        """The next data message; OSError once the websocket is closed, TimeoutError
        when nothing came within `timeout` seconds."""
        msg = await self._sock.receive(timeout)
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            if (
                msg.type == WSMsgType.ERROR
                and getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
            ):
                refusals.count(self.server, refusals.INBOUND_TOO_LARGE)
            raise OSError(f"websocket closed ({msg.type!r})")
        data: str | bytes = msg.data
        return data


def _wake_one(waiters: list[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.pop(0)
        if not waiter.done():
            waiter.set_result(None)
            return


def install(eio_server: Any, *, max_messages: int, max_bytes: int, on_slow: SlowHandler) -> None:
    """Give this Engine.IO server bounded per-socket queues and the direct writer."""

    coalescer = Coalescer()

    def create_queue(*args: Any, **kwargs: Any) -> OutboundQueue:
        return OutboundQueue(
            max_messages=max_messages, max_bytes=max_bytes, on_slow=on_slow, coalescer=coalescer
        )

    eio_server.create_queue = create_queue
    eio_server._async = {**eio_server._async, "websocket": DirectWebSocket}
