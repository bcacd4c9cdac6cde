"""One client connection: its Engine.IO session, its Socket.IO socket, its outbound
buffer and its heartbeat, in one slotted object with no task of its own.

Outbound, as gateway/outbound.py did before:

* on websocket, when nothing is queued ahead, a packet goes straight to the TCP
  transport as a websocket frame (a fanout packet's frame is built once and shared by
  every recipient). Frames for one connection within one loop tick are gathered and
  written together at its end (`Coalescer`): NATS hands the gateway many messages per
  read, and the send syscall per write is most of the cost of a delivery;
* on polling, or while upgrading, packets wait in a deque (created only while
  something waits) for the next poll or for the websocket;
* both paths are bounded: the queue by `max_queued_messages` packets and
  `max_buffered_bytes` of MESSAGE text, the direct path by the transport's write
  buffer plus this tick's frames against `max_buffered_bytes`. A connection over a
  bound has stopped reading: its transport is aborted and it is closed with
  CloseReason.SLOW_CLIENT.

Inbound, a websocket's messages come from its transport's protocol (websocket.py,
server.WebSocketReading) and polling POSTs in their request tasks; both ask `throttle`
before each packet (the socket's and its IP's packet rates, gateway/limits.py: over
them the connection is simply not read for a while, and one that keeps flooding is
disconnected) and hand it to `receive`.
Malformed input closes the connection and is counted per kind
(`refusals_total{reason="malformed_<kind>"}`), with one WARNING per kind every 5 s.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from gateway.engine import sio_codec
from gateway.engine.admission import Admission
from gateway.engine.api import (
    ClientEvent,
    CloseReason,
    ConnectRefused,
    EngineEvents,
    HandshakeRequest,
    OutboundPacket,
    Transport,
    takes_trailing_argument,
)
from gateway.engine.frames import BINARY, text_frame, ws_frame
from gateway.engine.heartbeat import PingSchedule
from gateway.engine.options import EngineOptions
from gateway.engine.payloads import MESSAGE_TYPE_BYTE, Packet
from gateway.engine.websocket import GOING_AWAY, NORMAL, WebSocket
from gateway.limits import InboundLimiter, KeyedBuckets, TokenBucket
from gateway.logs import Throttled
from shared.envelope import RESERVED_EVENTS

log = logging.getLogger(__name__)

NOOP: Final = "6"
CLOSE: Final = "1"
PING: Final = "2"
PONG: Final = "3"
MESSAGE: Final = "4"
GOING_AWAY_TIMEOUT_S: Final = 1.0
LAST_PAYLOAD_WAIT_S: Final = 5.0
"""How long a polling session disconnected by the server stays findable for the polls
that take its goodbye (`sailcast:disconnect`, `41`) and then its Engine.IO close,
before it is dropped."""
DISCONNECT_EVENT: Final = "sailcast:disconnect"
"""The event a worker's disconnect with a reason sends its client, `{"reason": …}`,
just before the Socket.IO DISCONNECT (docs/sails-clients.md)."""
RESERVED_EVENT: Final = "reserved_event"
"""The refusals_total reason of a client event named like a lifecycle event."""
ATTACHMENTS: Final = "attachments"
"""The refusals_total reason of a packet announcing more binary attachments than
--max-attachments, or of attachments over --max-attachment-bytes buffered: the
connection is cut (CloseReason.TRANSPORT_ERROR)."""
HANDSHAKE_TIMEOUT: Final = "handshake_timeout"
"""The refusals_total reason of a session closed for sending no Socket.IO CONNECT
within --handshake-timeout-s."""
INBOUND_RATE: Final = "inbound_rate"
"""The refusals_total reason of a packet held back by a packet rate (read later)."""
INBOUND_FLOOD: Final = "inbound_flood"
"""The refusals_total reason of a connection cut for flooding."""
MALFORMED_UTF8: Final = "utf8"
MALFORMED_ENGINEIO: Final = "engineio_packet"
MALFORMED_SOCKETIO: Final = "socketio_packet"
MALFORMED_PAYLOAD: Final = "polling_payload"
MALFORMED_ATTACHMENT: Final = "attachment"
MALFORMED_WEBSOCKET: Final = "websocket_frame"
"""A websocket frame against RFC 6455 (unmasked, bad control frame, unknown opcode)."""
_warnings = Throttled(log)

Queued = str | bytes | OutboundPacket


def new_id() -> str:
    """A session or socket id: 20 URL-safe characters, as python-engineio made them."""
    return secrets.token_urlsafe(15)


class Coalescer:
    """The connections that got frames during this tick; written out once, at its end."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[EngineConnection] = []
        self._scheduled = False

    def mark(self, conn: EngineConnection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_all)

    def flush_all(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for conn in dirty:
            conn.flush()


class Shared:
    """What every connection of one engine shares: options, timers, the event sink."""

    def __init__(
        self,
        options: EngineOptions,
        events: EngineEvents,
        *,
        on_refusal: Callable[[str], None],
        on_slow: Callable[[str, str], None],
    ) -> None:
        self.options = options
        self.max_buffered_bytes = options.max_buffered_bytes
        """Read for every frame written: one attribute hop, not two."""
        self.events = events
        self.on_refusal = on_refusal
        self.on_slow = on_slow
        self.coalescer = Coalescer()
        self.admission = Admission(options)
        self.sessions: dict[str, EngineConnection] = {}
        """Engine.IO sid → connection, while open."""
        self.tasks: set[asyncio.Future[Any]] = set()
        inbound = options.inbound
        self.ip_buckets = (
            KeyedBuckets(inbound.inbound_ip_rate_per_s, inbound.inbound_ip_burst)
            if inbound.inbound_ip_rate_per_s > 0
            else None
        )
        """One packet-rate bucket per client IP, shared by its connections."""
        self.pings: PingSchedule[EngineConnection] = PingSchedule(
            options.ping_interval_s, EngineConnection.ping_due
        )
        self.pong_deadlines: PingSchedule[EngineConnection] = PingSchedule(
            options.ping_timeout_s, EngineConnection.pong_overdue
        )
        self.v3_checks: PingSchedule[EngineConnection] = PingSchedule(
            options.ping_timeout_s, EngineConnection.v3_check
        )
        self.v3_limit_s = options.ping_interval_s + options.ping_timeout_s

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def malformed(self, kind: str, sid: str, detail: str = "") -> None:
        """Garbage from a client: counted, and one WARNING per kind every 5 s (the
        rest at DEBUG), never a traceback: a hostile client cannot fill the disk."""
        self.on_refusal("malformed_" + kind)
        _warnings.warning(
            kind, "malformed client input (%s), closing: %s", kind, detail, extra={"sid": sid}
        )

    @property
    def per_ip(self) -> bool:
        """Whether anything is kept per client IP (sessions or packet rates): only then
        is a new session's IP resolved at all."""
        return self.admission.per_ip or self.ip_buckets is not None

    def limiter(self, ip: str, now: float) -> InboundLimiter:
        """A connection's packet-rate limiter: its own bucket, and its IP's when there
        is a per-IP rate (acquired here, released when the connection closes)."""
        inbound = self.options.inbound
        own = (
            TokenBucket(inbound.inbound_rate_per_s, inbound.inbound_burst, now)
            if inbound.inbound_rate_per_s > 0
            else None
        )
        ip_bucket = None
        if ip and self.ip_buckets is not None:
            ip_bucket = self.ip_buckets.acquire(ip, now)
        return InboundLimiter(own, ip_bucket)


class EngineConnection:
    """A `Connection` (api.py): the only implementation."""

    __slots__ = (
        "__weakref__",
        "_deadline",
        "_direct",
        "_frames",
        "_frames_bytes",
        "_last_seen",
        "_limiter",
        "_partial",
        "_partial_bytes",
        "_ping_at",
        "_poll",
        "_pong_by",
        "_queue",
        "_queued_bytes",
        "_shared",
        "_tr",
        "_ws",
        "b64",
        "closed",
        "eio_sid",
        "ip",
        "offsets",
        "pid",
        "protocol",
        "reason",
        "request",
        "sid",
        "socket_connected",
        "transport",
        "upgrading",
    )

    def __init__(
        self, shared: Shared, request: HandshakeRequest, transport: Transport, *, b64: bool
    ) -> None:
        self._shared = shared
        self.eio_sid = new_id()
        self.sid = ""
        """The Socket.IO id, set at CONNECT (v2: the Engine.IO sid), or restored."""
        self.pid = ""
        """The recovery session id (docs/recovery.md); "" without one."""
        self.protocol = request.protocol
        self.transport = transport
        self.request: HandshakeRequest | None = request
        """Kept until the Socket.IO CONNECT, then dropped."""
        self.b64 = b64
        """A v3 polling client that cannot take binary payloads."""
        self.closed = False
        self.reason = CloseReason.TRANSPORT_CLOSE
        self.socket_connected = False
        self.upgrading = False
        self._ws: WebSocket | None = None
        self._tr: asyncio.Transport | None = None
        self._direct = False
        self._frames: bytes | list[bytes] | None = None
        """This tick's frames: its only frame, or a list from the second on (no
        container per recipient for a tick's one message: a list per member and
        message was most of what the collector had to count)."""
        self._frames_bytes = 0
        """While there are `_frames`: the transport's buffer at the tick's first frame
        plus this tick's frames, against `max_buffered_bytes`."""
        self._queue: collections.deque[Queued] | None = None
        self._queued_bytes = 0
        self._poll: asyncio.Future[None] | None = None
        self._ping_at: float | None = None
        self._pong_by: float | None = None
        self._last_seen = 0.0
        self._partial: sio_codec.SioPacket | None = None
        self._partial_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self.ip: str | None = None
        """The client IP the session is counted under (admission.py), while it is."""
        self.offsets = False
        """api.Connection.offsets: set by the gateway at connect, read by the fanout."""
        self._limiter = shared.limiter("", time.monotonic())

    def __repr__(self) -> str:
        return f"<EngineConnection {self.sid or self.eio_sid} v{self.protocol} {self.transport}>"

    # -- the Connection seam ---------------------------------------------------------
    def send(self, packet: OutboundPacket) -> None:
        """The fanout's path: one shared frame, or a place in the queue (per recipient:
        keep it to attribute reads)."""
        if self._direct:
            self._write(packet.frame)
        elif not self.closed:
            self._enqueue(packet, len(packet.text))

    def emit(self, event: str, data: Any) -> None:
        if self.socket_connected and not self.closed:
            for pkt in self._event_packets(event, data):
                self.send_packet(pkt)

    def _event_packets(self, event: str, data: Any) -> list[Packet]:
        args = [event, data]
        if takes_trailing_argument(self.offsets, self.protocol, isinstance(data, str)):
            args.append(None)  # not an offset: read as none by either client
        return list(sio_codec.encode_data(sio_codec.EVENT, args))

    def restore(self, sid: str, pid: str) -> None:
        self.sid = sid
        self.pid = pid

    def evict(self) -> None:
        """Closed as a takeover: the gateway is not told (it already forgot it)."""
        self.socket_connected = False
        if self._tr is not None:
            self._tr.abort()
        self.close(CloseReason.SERVER, [], close_ws=False)

    async def disconnect(self, reason: str | None = None) -> None:
        """Socket.IO DISCONNECT (`41`), then the transport is closed; with a reason, the
        `sailcast:disconnect` event first. Both are goodbye packets of `close`: on
        websocket written in one write ahead of the close frame; on polling one payload,
        and the Engine.IO close the NEXT poll's, as engine.io sends them
        (socket.io-client 4 handles a payload's Socket.IO packets a tick after its
        Engine.IO packets: with the close beside them it would report
        "transport close" before seeing the reason or the `41`)."""
        goodbye: list[Packet] = []
        if self.socket_connected:
            if reason is not None:
                goodbye.extend(self._event_packets(DISCONNECT_EVENT, {"reason": reason}))
            goodbye.append("41")
        polling = self.transport is Transport.POLLING
        if polling and not goodbye:
            goodbye.append(CLOSE)
        self.close(CloseReason.SERVER, goodbye, last_payload=polling and goodbye[-1] != CLOSE)

    async def going_away(self) -> None:
        """Websocket: close 1001 and no goodbye, as a restarting server would; polling:
        the session is dropped (the next poll gets 400). Clients reconnect."""
        ws = self._ws
        if ws is None or ws.closing:
            self.close(CloseReason.GOING_AWAY, [])
            return
        self.flush()
        self.close(CloseReason.GOING_AWAY, [], close_ws=False)
        ws.close(GOING_AWAY, b"server going away", GOING_AWAY_TIMEOUT_S)
        try:
            await ws.wait_closed()
        except asyncio.CancelledError:  # the drain's deadline passed: drop it now
            ws.abort()
            raise

    # -- outbound --------------------------------------------------------------------
    def send_packet(self, pkt: Packet) -> None:
        """One Engine.IO packet of this connection's own (control, ack, emit)."""
        if self._direct:
            if isinstance(pkt, str):
                self._write(text_frame(pkt))
            else:
                body = MESSAGE_TYPE_BYTE + pkt if self.protocol == 3 else pkt
                self._write(ws_frame(body, BINARY))
        elif not self.closed:
            size = len(pkt) if isinstance(pkt, bytes) or pkt[:1] == MESSAGE else 0
            self._enqueue(pkt, size)

    def _enqueue(self, item: Queued, size: int) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = collections.deque()
        opts = self._shared.options
        if len(queue) >= opts.max_queued_messages or (
            self._queued_bytes + size > opts.max_buffered_bytes
        ):
            self._slow("queue")
            return
        queue.append(item)
        self._queued_bytes += size
        poll = self._poll
        if poll is not None and not poll.done():
            poll.set_result(None)

    def _write(self, frame: bytes) -> None:
        """Gather a frame for the end of this tick, or cut the connection off when its
        transport already holds more than the bound (it stopped reading). The
        transport's buffer is read at a tick's first frame only: nothing of ours is
        written to it before the tick's end."""
        frames = self._frames
        if frames is not None:
            size = self._frames_bytes + len(frame)
            if size > self._shared.max_buffered_bytes:
                self._slow("write_buffer")
                return
            if isinstance(frames, bytes):
                self._frames = [frames, frame]
            else:
                frames.append(frame)
            self._frames_bytes = size
            return
        tr = self._tr
        if tr is None or tr.is_closing():
            return
        size = tr.get_write_buffer_size() + len(frame)
        if size > self._shared.max_buffered_bytes:
            self._slow("write_buffer")
            return
        self._frames = frame
        self._frames_bytes = size
        self._shared.coalescer.mark(self)

    def flush(self) -> None:
        """Write the frames gathered this tick in one call (one send syscall)."""
        frames = self._frames
        if not frames:
            return
        self._frames = None
        self._frames_bytes = 0
        tr = self._tr
        if tr is None or tr.is_closing():
            return
        tr.write(frames if isinstance(frames, bytes) else b"".join(frames))

    def _slow(self, reason: str) -> None:
        if self.closed:
            return
        self._frames = None
        self._frames_bytes = 0
        self._queue = None
        if self._tr is not None:
            self._tr.abort()  # drop what the client never read
        sid = self.sid
        self.close(CloseReason.SLOW_CLIENT, [], close_ws=False)
        if sid:
            self._shared.on_slow(sid, reason)

    def take_queued(self) -> list[Packet]:
        """Everything queued, as polling payloads carry it (and the queue forgotten)."""
        queue, self._queue = self._queue, None
        self._queued_bytes = 0
        if not queue:
            return []
        return [item if isinstance(item, str | bytes) else item.text for item in queue]

    async def poll(self, timeout_s: float) -> list[Packet]:
        """A long-poll: what is queued, once something is (a NOOP after `timeout_s`)."""
        if not self._queue and not self.closed:
            poll = self._poll = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(poll, timeout_s)
            except TimeoutError:
                pass
            finally:
                self._poll = None
        if self.closed:  # a session lingering for its goodbye (`close`)
            goodbye = self.take_queued()
            if goodbye:
                return goodbye
            self._forget()
            return [CLOSE]  # its last payload
        return self.take_queued() or [NOOP]

    @property
    def polling(self) -> bool:
        return self._poll is not None

    def end_poll(self) -> None:
        """Answer a pending long-poll now (with a NOOP when nothing is queued)."""
        poll = self._poll
        if poll is not None and not poll.done():
            poll.set_result(None)

    # -- websocket -------------------------------------------------------------------
    def attach_websocket(self, ws: WebSocket) -> None:
        """From now on every packet is written to this websocket; what waited in the
        queue goes first, in order."""
        self._ws, self._tr = ws, ws.transport
        self.transport = Transport.WEBSOCKET
        self.upgrading = False
        for item in self.take_queued():
            if isinstance(item, str):
                self._write(text_frame(item))
            else:
                body = MESSAGE_TYPE_BYTE + item if self.protocol == 3 else item
                self._write(ws_frame(body, BINARY))
        self._direct = not self.closed
        self.end_poll()

    # -- heartbeat -------------------------------------------------------------------
    def admitted(self, ip: str) -> None:
        """Count this new session under `ip` (its sessions and its packet rate), and
        close it if it sends no Socket.IO CONNECT within the handshake timeout (a
        half-open session is short-lived)."""
        self.ip = ip
        shared = self._shared
        shared.admission.opened(ip)
        if ip and shared.ip_buckets is not None:
            self._limiter = shared.limiter(ip, time.monotonic())
        if self.protocol == 4:
            self._deadline = asyncio.get_running_loop().call_later(
                shared.options.handshake_timeout_s, self._handshake_overdue
            )

    def _handshake_overdue(self) -> None:
        self._deadline = None
        if self.closed or self.sid or self.socket_connected:
            return
        self._shared.on_refusal(HANDSHAKE_TIMEOUT)
        log.debug("no Socket.IO CONNECT within the handshake timeout, closing")
        self.close(CloseReason.SERVER, [CLOSE])

    def start_heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        if self.protocol == 3:  # the client pings; we watch the clock
            self._last_seen = loop.time()
            self._ping_at = self._shared.v3_checks.add(self)
        else:
            self._ping_at = self._shared.pings.add(self)

    def ping_due(self, at: float) -> None:
        if self._ping_at != at or self.closed:
            return
        self._ping_at = None
        self.send_packet(PING)
        self._pong_by = self._shared.pong_deadlines.add(self)

    def pong_overdue(self, at: float) -> None:
        if self._pong_by == at and not self.closed:
            log.info("no pong within the ping timeout, closing", extra={"sid": self.sid})
            self.close(CloseReason.PING, [CLOSE])

    def v3_check(self, at: float) -> None:
        if self._ping_at != at or self.closed:
            return
        idle_s = asyncio.get_running_loop().time() - self._last_seen
        if idle_s > self._shared.v3_limit_s:
            log.info(
                "EIO3 client sent no ping in %ss, closing",
                self._shared.v3_limit_s,
                extra={"sid": self.sid or self.eio_sid},
            )
            self.close(CloseReason.PING, [CLOSE])
        else:
            self._ping_at = self._shared.v3_checks.add(self)

    # -- inbound ---------------------------------------------------------------------
    def throttle(self) -> float:
        """Seconds to wait before reading this connection's next packet (0.0: read it
        now). Waiting is the backpressure of the packet rates; a connection that has
        kept over its own rate for --inbound-flood-cut-s is disconnected instead
        (Socket.IO DISCONNECT, reason `server`, refusals_total{reason="inbound_flood"})."""
        now = time.monotonic()
        wait = self._limiter.wait_s(now)
        if not wait:
            return 0.0
        shared = self._shared
        shared.on_refusal(INBOUND_RATE)
        if self._limiter.flooding_s(now) >= shared.options.inbound.inbound_flood_cut_s:
            shared.on_refusal(INBOUND_FLOOD)
            _warnings.warning(
                INBOUND_FLOOD,
                "client kept sending over --inbound-rate-per-s for %ss, disconnecting it",
                shared.options.inbound.inbound_flood_cut_s,
                extra={"sid": self.sid or self.eio_sid},
            )
            goodbye = [sio_codec.DISCONNECT_PACKET] if self.socket_connected else []
            self.close(CloseReason.SERVER, goodbye)
        return wait

    def receive(self, pkt: Packet) -> bool:
        """One inbound Engine.IO packet; False when it ended the connection."""
        if self.closed:
            return False
        if self.protocol == 3:
            self._last_seen = asyncio.get_running_loop().time()
        if isinstance(pkt, bytes):
            self._on_attachment(pkt)
            return not self.closed
        kind = pkt[:1]
        if kind == MESSAGE:
            self._on_message(pkt[1:])
        elif kind == PONG:
            if self.protocol == 4 and self._pong_by is not None:
                self._pong_by = None
                self._ping_at = self._shared.pings.add(self)
        elif kind == PING:
            if self.protocol == 3:
                self.send_packet(PONG + pkt[1:])
        elif kind == CLOSE:
            self.close(CloseReason.CLIENT, [])
        elif kind not in ("0", "5", "6"):
            self._shared.malformed(MALFORMED_ENGINEIO, self.sid, f"packet type {kind!r}")
            self.close(CloseReason.TRANSPORT_ERROR, [])
        return not self.closed

    def _on_message(self, text: str) -> None:
        try:
            pkt = sio_codec.decode(text, self._shared.options.max_attachments)
        except sio_codec.TooManyAttachments as exc:
            self._cut_attachments(str(exc))
            return
        except ValueError as exc:
            self._shared.malformed(MALFORMED_SOCKETIO, self.sid, str(exc)[:200])
            self.close(CloseReason.TRANSPORT_ERROR, [])
            return
        if pkt.attachments:
            pkt.buffers = []
            self._partial = pkt
            self._partial_bytes = 0
            return
        self._dispatch(pkt)

    def _cut_attachments(self, why: str) -> None:
        """Over an attachment bound: counted, and the connection is cut."""
        self._shared.on_refusal(ATTACHMENTS)
        log.info("binary attachments over the bound (%s), closing", why, extra={"sid": self.sid})
        self.close(CloseReason.TRANSPORT_ERROR, [])

    def _on_attachment(self, data: bytes) -> None:
        pkt = self._partial
        if pkt is None or pkt.buffers is None:
            return  # a stray binary message: nothing waits for it (and nothing is kept)
        self._partial_bytes += len(data)
        if self._partial_bytes > self._shared.options.max_attachment_bytes:
            self._cut_attachments(f"{self._partial_bytes} bytes buffered")
            return
        pkt.buffers.append(data)
        if len(pkt.buffers) < pkt.attachments:
            return
        self._partial = None
        self._partial_bytes = 0
        try:
            pkt.data = sio_codec.reconstruct(pkt.data, pkt.buffers)
        except ValueError as exc:
            self._shared.malformed(MALFORMED_ATTACHMENT, self.sid, str(exc))
            self.close(CloseReason.TRANSPORT_ERROR, [])
            return
        pkt.buffers = None
        self._dispatch(pkt)

    def _dispatch(self, pkt: sio_codec.SioPacket) -> None:
        kind = pkt.type
        if kind in (sio_codec.EVENT, sio_codec.BINARY_EVENT):
            if pkt.namespace == "/" and self.socket_connected:
                self._on_event(pkt)
        elif kind == sio_codec.CONNECT:
            self._on_connect_packet(pkt)
        elif kind == sio_codec.DISCONNECT and pkt.namespace == "/":
            self.close(CloseReason.CLIENT, [])
        # ACKs (the server asks clients nothing) and CONNECT_ERRORs are not for a server

    def _on_event(self, pkt: sio_codec.SioPacket) -> None:
        data = pkt.data
        if (
            not isinstance(data, list)
            or not data
            or not isinstance(data[0], str)
            or (data[0] in RESERVED_EVENTS)
        ):
            self._shared.on_refusal(RESERVED_EVENT)
            return
        event = ClientEvent(self.sid, data[0], tuple(data[1:]), pkt.id is not None)
        self._shared.spawn(self._run_event(event, pkt.id))

    async def _run_event(self, event: ClientEvent, ack_id: int | None) -> None:
        try:
            result = await self._shared.events.event(event)
        except Exception:
            _warnings.exception(
                "event_failed", "client event %r failed", event.event[:100], extra={"sid": self.sid}
            )
            return
        if ack_id is not None and result is not None and not self.closed:
            args = list(result) if isinstance(result, tuple) else [result]
            for pkt in sio_codec.encode_data(sio_codec.ACK, args, ack_id):
                self.send_packet(pkt)

    def _on_connect_packet(self, pkt: sio_codec.SioPacket) -> None:
        namespace = pkt.namespace.partition("?")[0]
        if namespace not in ("", "/"):
            self.send_packet(sio_codec.connect_error(self.protocol, "Invalid namespace", namespace))
            return
        if self.protocol == 3 or self.socket_connected or self.sid:
            return  # v2: "/" was connected by the server at the handshake
        auth = pkt.data if pkt.has_data else None
        self.sid = new_id()  # now: a second CONNECT in the same payload is ignored
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._shared.spawn(self.connect_socket(auth))

    async def connect_socket(self, auth: Any) -> None:
        """The Socket.IO CONNECT of the default namespace (a v2 client's is made at
        the handshake): the gateway decides, the client is told."""
        request = self.request
        if request is None or self.closed:
            return
        if self.protocol == 3:
            self.sid = self.eio_sid
        try:
            replay = await self._shared.events.connected(self, request, auth)
        except ConnectRefused as exc:
            self._refuse(exc.message)
            return
        except Exception:
            log.exception("connect handler failed", extra={"sid": self.sid})
            self._refuse("internal error")
            return
        self.request = None
        self.socket_connected = True
        if self.closed:  # it left while the gateway was deciding: it was registered
            await self._shared.events.disconnected(self.sid, self.reason)
            return
        payload: dict[str, Any] | None = None
        if self.protocol == 4:
            payload = {"sid": self.sid, "pid": self.pid} if self.pid else {"sid": self.sid}
        self.send_packet(sio_codec.connect_reply(self.protocol, payload))
        for packet in replay or ():  # nothing between the reply and these
            self.send(packet)

    def _refuse(self, message: str) -> None:
        self.sid = ""
        self.send_packet(sio_codec.connect_error(self.protocol, message))
        self._shared.spawn(self._close_refused())

    async def _close_refused(self) -> None:
        """A Socket.IO v2 client (sails.io.js 1.x) stays connected at the Engine.IO
        level after a refused connect; close it once it had time to read why."""
        await asyncio.sleep(self._shared.options.refused_close_grace_s)
        if not self.closed and not self.socket_connected:
            self.close(CloseReason.SERVER, [CLOSE])

    # -- the end ---------------------------------------------------------------------
    def close(
        self,
        reason: CloseReason,
        goodbye: Sequence[Packet],
        *,
        close_ws: bool = True,
        last_payload: bool = False,
    ) -> None:
        """End the connection: `goodbye` packets go out first (what is queued too on
        websocket), then the transport is closed; the gateway is told once. With
        `last_payload` (polling), the session stays findable for the polls that take the
        goodbye and then the Engine.IO close (`poll`), for at most LAST_PAYLOAD_WAIT_S."""
        if self.closed:
            return
        for pkt in goodbye:
            self.send_packet(pkt)
        self.closed = True
        self.reason = reason
        self._direct = False
        self._ping_at = self._pong_by = None
        self._partial = None
        shared = self._shared
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        ip = self.ip
        if ip is not None:
            shared.admission.closed(ip)
            if ip and shared.ip_buckets is not None:
                shared.ip_buckets.release(ip)
            self.ip = None
        ws = self._ws
        if shared.sessions.get(self.eio_sid) is self:
            if last_payload and ws is None:
                # the goodbye is a poll's payload (this one's if one waits), the close the
                # next one's: the session stays findable until then, or a short while
                asyncio.get_running_loop().call_later(LAST_PAYLOAD_WAIT_S, self._forget)
            else:
                del shared.sessions[self.eio_sid]
        if ws is not None:
            self.flush()
            if close_ws:
                ws.close(NORMAL, b"", shared.options.close_wait_s)
        elif not self._queue and not goodbye:
            self._enqueue(NOOP, 0)  # ends a pending long-poll now
        self.end_poll()
        if self.socket_connected:
            shared.spawn(shared.events.disconnected(self.sid, reason))

    def _forget(self) -> None:
        """A closed polling session's last payload was taken, or never will be."""
        sessions = self._shared.sessions
        if sessions.get(self.eio_sid) is self:
            del sessions[self.eio_sid]
