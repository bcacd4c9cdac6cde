"""The websocket of one connection after its upgrade: RFC 6455 read and closed by us,
on the event loop's transport, with no aiohttp object, task or buffer left behind.

aiohttp answers the HTTP request; at the upgrade the engine writes the 101 itself and
takes the transport over (`take_over`): aiohttp forgets the connection (its request,
parser, handler task and websocket reader were ~11 KB of the ~17 KB an idle
connection cost, issue 17's S3), and every frame the client sends reaches
`WebSocket.data_received`, which parses it and hands each complete message to the
engine (`MessageSink`). Writing stays as it was: the connection writes frames on the
transport (connection.py).

What a server must do is done: client frames must be masked, control frames short
and unfragmented, RSV bits clear (no extension is negotiated), text valid UTF-8, a
message within `max_message` bytes (else close 1009), pings answered, a close
answered and the TCP connection closed; a close of ours waits `wait_s` for the
client's before the transport is aborted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import struct
from typing import Final, Protocol

from aiohttp import web

from gateway.engine.frames import ws_frame

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
NORMAL: Final = 1000
GOING_AWAY: Final = 1001
PROTOCOL_ERROR: Final = 1002
INVALID_TEXT: Final = 1007
MESSAGE_TOO_BIG: Final = 1009
MESSAGES_PER_TURN: Final = 16
"""Messages handled from one connection's reads before the loop runs everyone else."""


class WebSocketError(Exception):
    """A client broke RFC 6455: the close code to send, and why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class MessageSink(Protocol):
    """The engine's side of a websocket."""

    def message(self, data: str | bytes) -> float:
        """One complete message. 0.0: handled; > 0: not handled yet, read nothing for
        that many seconds and hand it again (the packet rates' backpressure)."""
        ...

    def ended(self, error: WebSocketError | None) -> None:
        """The websocket is gone (closed by either side, lost, or `error`)."""
        ...


def handshake_problem(request: web.Request) -> str | None:
    """Why `request` is no websocket upgrade we accept (None: it is one)."""
    headers = request.headers
    if request.method != "GET":
        return "Invalid websocket upgrade: method"
    if "upgrade" not in headers.get("Connection", "").lower():
        return "Invalid websocket upgrade: Connection"
    if headers.get("Sec-WebSocket-Version", "") != "13":
        return "Unsupported websocket version"
    try:
        key = base64.b64decode(headers.get("Sec-WebSocket-Key", ""), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 16:
        return "Invalid Sec-WebSocket-Key"
    return None


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def switching_protocols(key: str) -> bytes:
    """The 101 answer (no subprotocol, no extension: permessage-deflate declined)."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()


class Upgraded(web.StreamResponse):
    """What the handler returns to aiohttp for a connection it no longer holds: it has
    nothing to write and nothing to keep alive."""

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def take_over(request: web.Request) -> asyncio.Transport | None:
    """Write the 101 and detach the transport from aiohttp, through public names only:
    it closes nothing when the handler returns and keeps no state for the connection
    (None: the client is already gone). A client may send frames only after the 101
    (RFC 6455 §4.1), and `WebSocket.start` follows in the same step, so no frame of
    the client's can reach aiohttp in between."""
    tr = request.transport
    handler = request.protocol
    if tr is None or tr.is_closing():  # (uvloop's transports are no asyncio.Transport)
        return None
    tr.write(switching_protocols(request.headers["Sec-WebSocket-Key"]))
    handler.transport = None  # its force_close() must not close our transport
    handler.connection_lost(None)  # the server forgets it: request, parser, timers
    return tr


def unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    n = len(payload)
    if not n:
        return b""
    key = (mask * ((n + 3) >> 2))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return ws_frame(struct.pack("!H", code) + reason[:123], 0x80 | OP_CLOSE)


class WebSocket(asyncio.Protocol):
    """The transport's protocol after the upgrade (one per connection, slotted)."""

    __slots__ = (
        "_buf",
        "_close_timer",
        "_closed_future",
        "_fragments",
        "_fragments_op",
        "_fragments_size",
        "_held",
        "_max",
        "_pos",
        "_resume",
        "_sink",
        "closed",
        "closing",
        "transport",
    )

    def __init__(self, transport: asyncio.Transport, sink: MessageSink, max_message: int) -> None:
        self.transport = transport
        self._sink = sink
        self._max = max_message
        self._buf: bytes | bytearray = b""
        """Bytes read and not parsed yet, from `_pos` on (a bytearray while a frame
        waits for more: a message sent a byte at a time costs no quadratic copying)."""
        self._pos = 0
        self._fragments: list[bytes] | None = None
        self._fragments_op = OP_TEXT
        self._fragments_size = 0
        self._held: str | bytes | None = None
        """A message the sink asked to hand again later (throttled)."""
        self._resume: asyncio.Handle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._closed_future: asyncio.Future[None] | None = None
        self.closing = False
        """A close frame of ours was sent (or the transport is gone)."""
        self.closed = False
        """The transport is gone."""

    def start(self) -> None:
        """Become the transport's protocol: every byte read from now on is ours."""
        self.transport.set_protocol(self)

    def set_sink(self, sink: MessageSink) -> None:
        self._sink = sink

    # -- reading -----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed or self.transport.is_closing():
            return
        buf = self._buf
        if not buf:
            self._buf = data
        else:
            if not isinstance(buf, bytearray) or self._pos:
                buf = bytearray(buf[self._pos :])
                self._buf = buf
                self._pos = 0
            buf.extend(data)
        if self._resume is None:
            self._read()

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost follows

    def _continue(self) -> None:
        self._resume = None
        if self.transport.is_closing():
            return
        held, self._held = self._held, None
        if held is not None and not self._hand(held):
            return
        self._read()
        if self._resume is None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _pause(self, delay: float) -> None:
        self.transport.pause_reading()
        loop = asyncio.get_running_loop()
        self._resume = (
            loop.call_later(delay, self._continue) if delay else loop.call_soon(self._continue)
        )

    def _hand(self, data: str | bytes) -> bool:
        """The sink takes `data`; False when it asked for a pause (or closed us)."""
        wait = self._sink.message(data)
        if wait > 0 and not self.closing:
            self._held = data
            self._pause(wait)
            return False
        return not self.closing

    def _read(self) -> None:
        """Handle the complete frames buffered, MESSAGES_PER_TURN messages at most.
        After our close only its answer matters: data frames are dropped."""
        handed = 0
        while not self.transport.is_closing():
            try:
                message = self._next_message()
            except WebSocketError as exc:
                self._fail(exc)
                return
            if message is None:
                return
            if self.closing:
                continue
            if not self._hand(message):
                return
            handed += 1
            if handed >= MESSAGES_PER_TURN and self._buf:  # more frames may wait
                self._pause(0.0)
                return

    def _next_message(self) -> str | bytes | None:
        """The next complete data message in the buffer (control frames are answered
        on the way); None when more bytes are needed."""
        while True:
            buf = self._buf
            start = self._pos
            n = len(buf)
            if n - start < 2:
                return None
            b0, b1 = buf[start], buf[start + 1]
            length = b1 & 0x7F
            pos = start + 2
            if length == 126:
                if n - start < 4:
                    return None
                length = int.from_bytes(buf[pos : pos + 2], "big")
                pos += 2
            elif length == 127:
                if n - start < 10:
                    return None
                length = int.from_bytes(buf[pos : pos + 8], "big")
                pos += 8
            if not b1 & 0x80:
                raise WebSocketError(PROTOCOL_ERROR, "unmasked client frame")
            if b0 & 0x70:
                raise WebSocketError(PROTOCOL_ERROR, "RSV bits set (no extension agreed)")
            opcode = b0 & 0x0F
            fin = bool(b0 & 0x80)
            control = opcode >= 0x8
            if control and (length > 125 or not fin):
                raise WebSocketError(PROTOCOL_ERROR, "bad control frame")
            if not control and self._fragments_size + length > self._max:
                raise WebSocketError(MESSAGE_TOO_BIG, f"message over {self._max} bytes")
            end = pos + 4 + length
            if n < end:
                return None
            payload = unmask(buf[pos + 4 : end], buf[pos : pos + 4])
            if end < n:
                self._pos = end
            else:
                self._buf = b""
                self._pos = 0
            if control:
                self._control(opcode, payload)
                if self.transport.is_closing():
                    return None
                continue
            message = self._assemble(opcode, fin, payload)
            if message is not None:
                return message

    def _assemble(self, opcode: int, fin: bool, payload: bytes) -> str | bytes | None:
        fragments = self._fragments
        if opcode == CONTINUATION:
            if fragments is None:
                raise WebSocketError(PROTOCOL_ERROR, "continuation without a message")
            fragments.append(payload)
            self._fragments_size += len(payload)
            if not fin:
                return None
            self._fragments = None
            self._fragments_size = 0
            return self._decode(self._fragments_op, b"".join(fragments))
        if opcode not in (OP_TEXT, OP_BINARY):
            raise WebSocketError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if fragments is not None:
            raise WebSocketError(PROTOCOL_ERROR, "new message inside a fragmented one")
        if not fin:
            self._fragments = [payload]
            self._fragments_op = opcode
            self._fragments_size = len(payload)
            return None
        return self._decode(opcode, payload)

    @staticmethod
    def _decode(opcode: int, payload: bytes) -> str | bytes:
        if opcode == OP_BINARY:
            return payload
        try:
            return payload.decode()
        except UnicodeDecodeError:
            raise WebSocketError(INVALID_TEXT, "invalid UTF-8") from None

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self.transport.write(ws_frame(payload, 0x80 | OP_PONG))
        elif opcode == OP_CLOSE:
            if self.closing:  # the answer to our close
                self.transport.close()
                return
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NORMAL
            self.closing = True
            self.transport.write(close_frame(code if code < 5000 else NORMAL))
            self.transport.close()
        elif opcode != OP_PONG:
            raise WebSocketError(PROTOCOL_ERROR, f"unknown opcode {opcode}")

    def _fail(self, exc: WebSocketError) -> None:
        if self.closing:  # garbage instead of the answer to our close
            self.transport.abort()
            return
        self.close(exc.code, str(exc).encode(), 0.0)
        self._sink.ended(exc)

    # -- closing -----------------------------------------------------------------------
    def close(self, code: int = NORMAL, reason: bytes = b"", wait_s: float = 0.5) -> None:
        """Send our close frame; the transport closes when the client answers, or is
        aborted after `wait_s` (at once with 0)."""
        if self.closing:
            return
        self.closing = True
        self._fragments = None
        self._held = None
        if self._resume is not None:  # read on: the answer is to come
            self._resume.cancel()
            self._resume = None
            self.transport.resume_reading()
        tr = self.transport
        if tr.is_closing():
            return
        tr.write(close_frame(code, reason))
        if wait_s <= 0:
            tr.close()
        else:
            self._close_timer = asyncio.get_running_loop().call_later(wait_s, tr.abort)

    def abort(self) -> None:
        self.closing = True
        self.transport.abort()

    async def wait_closed(self) -> None:
        if self.closed:
            return
        if self._closed_future is None:
            self._closed_future = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed_future)

    def _drop_read_state(self) -> None:
        self._buf = b""
        self._pos = 0
        self._fragments = None
        self._held = None
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = self.closing = True
        self._drop_read_state()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._closed_future is not None and not self._closed_future.done():
            self._closed_future.set_result(None)
        self._sink.ended(None)
