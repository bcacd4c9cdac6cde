"""Engine.IO v4 sockets without tasks of their own.

python-engineio gives every websocket four tasks besides aiohttp's two (one per
connection, one per request): a writer, the writer's timed queue wait, a timed reader
wait (a new one per received message) and a sleeping pinger. Under S3 (idle
connections) those tasks, their coroutines and futures were a third of the memory a
connection costs. Here an Engine.IO v4 socket keeps python-engineio's protocol
logic (`receive`, `send`, `close`, the upgrade rules) but:

* the websocket is read in aiohttp's request task, with no timer: a client that stops
  answering pings is closed by python-engineio's one service task for all sockets
  (`check_ping_timeout`), which also closes its websocket here;
* every outbound packet is written by the socket's OutboundQueue (outbound.py) the
  moment it is sent, so there is no writer;
* the next ping is an entry in the server's PingSchedule, not a sleeping task nor a
  timer of its own (for polling sockets too).

v3 sockets (eio3.py) keep python-engineio's path. `install` adopts each new v4 socket;
tests/integration/test_engine_sockets.py pins the behaviour and the internals used.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref
from typing import Any, Final

from engineio import async_socket as eio_async_socket
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from gateway import refusals
from gateway.outbound import OutboundQueue

log = logging.getLogger(__name__)

_PROBE: Final = "probe"
_SCHEDULE_ATTR: Final = "_sailcast_pings"
EARLY_S: Final = 0.005
"""A ping this close to due when the schedule's timer fires goes out with the others."""


class PingSchedule:
    """Every socket's next ping, in one deque and one loop timer.

    The interval is the same for every socket of a server, so sockets fall due in the
    order they were scheduled: appending keeps the deque sorted. A socket that closes
    leaves a stale entry behind (a weak reference: it keeps nothing alive), skipped
    when it comes up.
    """

    __slots__ = ("_due", "_interval_s", "_timer")

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._due: collections.deque[tuple[float, weakref.ref[Eio4Socket]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._due)

    def add(self, sock: Eio4Socket) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time() + self._interval_s
        sock._ping_at = at
        self._due.append((at, weakref.ref(sock)))
        if self._timer is None:
            self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        due = self._due
        horizon = loop.time() + EARLY_S
        while due and due[0][0] <= horizon:
            at, ref = due.popleft()
            sock = ref()
            if sock is not None and sock._ping_at == at:
                sock._ping_at = None
                sock.ping_due()
        if due:
            self._timer = loop.call_at(due[0][0], self._fire)


class Eio4Socket(eio_async_socket.AsyncSocket):  # type: ignore[misc]
    """An Engine.IO v4 socket whose websocket session runs without extra tasks."""

    server: Any
    sid: str
    queue: Any
    last_ping: float | None
    connected: bool
    upgrading: bool
    upgraded: bool
    closing: bool
    closed: bool
    _ping_at: float | None = None
    """When this socket's entry in the PingSchedule falls due (None: not scheduled)."""

    @classmethod
    def adopt(cls, sock: Any) -> None:
        """Turn a just-created plain socket into one of these (v3 ones stay as they are)."""
        if type(sock) is eio_async_socket.AsyncSocket:
            sock.__class__ = cls

    # -- heartbeat: the server pings, on a timer ------------------------------------
    def schedule_ping(self) -> None:
        # as python-engineio: only once the previous ping was answered (or at the start)
        if self.last_ping:
            self.last_ping = None
            schedule = getattr(self.server, _SCHEDULE_ATTR, None)
            if schedule is None:
                schedule = PingSchedule(self.server.ping_interval)
                setattr(self.server, _SCHEDULE_ATTR, schedule)
            schedule.add(self)

    def ping_due(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.queue.put_nowait(eio_packet.Packet(eio_packet.PING))

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        self._ping_at = None
        await super().close(wait=wait, abort=abort, reason=reason)
        queue = self.queue
        if isinstance(queue, OutboundQueue) and queue.direct_only:
            queue.put_nowait(None)  # the session is over: close the websocket (after the goodbye)

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        refusals.post_too_large(self.server, environ)  # counted; python-engineio refuses it
        await super().handle_post_request(environ)

    # -- the websocket session ------------------------------------------------------
    async def _websocket_handler(self, ws: Any) -> Any:
        queue = self.queue
        if not isinstance(queue, OutboundQueue):  # not installed by outbound.install
            return await super()._websocket_handler(ws)
        timeout_s = self.server.ping_interval + self.server.ping_timeout
        if self.connected:  # on polling until now: this is an upgrade
            if not await self._upgrade(ws, timeout_s):
                return None
        else:
            self.connected = True
            self.upgraded = True
        try:
            if queue.go_direct():
                await self._read(ws)
        finally:
            await ws.close()
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        return None

    async def _upgrade(self, ws: Any, timeout_s: float) -> bool:
        """The v4 upgrade: probe ping → probe pong, the pending poll ended, UPGRADE."""
        self.upgrading = True  # packets sent meanwhile wait in the queue
        try:
            pkt = eio_packet.Packet(encoded_packet=await ws.wait(timeout_s))
            if pkt.packet_type != eio_packet.PING or pkt.data != _PROBE:
                log.info("failed websocket upgrade: no probe", extra={"eio_sid": self.sid})
                return False
            await ws.send(eio_packet.Packet(eio_packet.PONG, data=_PROBE).encode())
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the poll
            pkt = eio_packet.Packet(encoded_packet=await ws.wait(timeout_s))
            if pkt.packet_type != eio_packet.UPGRADE:
                log.info("failed websocket upgrade: no UPGRADE", extra={"eio_sid": self.sid})
                return False
        except (OSError, TimeoutError, ValueError, IndexError):
            return False
        finally:
            self.upgrading = False
        self.upgraded = True
        return True

    async def _read(self, ws: Any) -> None:
        """Receive until the client goes or closes, or the socket is closed (which
        closes the websocket: see `close`)."""
        while True:
            try:
                data = await ws.wait()
            except OSError:
                return
            try:
                pkt = eio_packet.Packet(encoded_packet=data)
            except (ValueError, IndexError):
                log.info("malformed Engine.IO packet, closing", extra={"eio_sid": self.sid})
                return
            try:
                await self.receive(pkt)
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                return
            except Exception:
                log.exception("error handling a packet", extra={"eio_sid": self.sid})


def install(eio_server: Any) -> None:
    """Adopt every new v4 socket of this Engine.IO server (after any v3 adoption)."""

    async def trigger_event(event: str, *args: Any, **kwargs: Any) -> Any:
        result = await type(eio_server)._trigger_event(eio_server, event, *args, **kwargs)
        if event == "connect":
            sock = eio_server.sockets.get(args[0])
            if sock is not None:
                Eio4Socket.adopt(sock)
        return result

    eio_server._trigger_event = trigger_event
