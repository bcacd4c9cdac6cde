"""One gateway: local sockets, their rooms, and the NATS traffic that feeds them.

Data path: a room message arrives from NATS (inline in the NATS reader, see
broker.py), is decoded once, becomes one Engine.IO packet, and is queued on every
local member's socket. Control path: membership requests are applied one at a time
by a single task, in arrival order, and answered only once any NATS subscription they
needed has been sent ahead of the reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from gateway.broker import Broker, Handler
from gateway.engine import Connection, event_packet
from gateway.fanout import Fanout
from gateway.interest import Interest
from gateway.logs import Throttled
from gateway.metrics import GatewayMetrics
from gateway.peers import Peers
from gateway.rooms import LocalRooms
from gateway.settings import GatewaySettings
from shared.envelope import (
    KIND_BLAST,
    DataMessage,
    decode_data,
    decode_request,
    encode_reply,
    encode_request,
    str_list,
)
from shared.errors import MalformedEnvelope, SailcastError, UsageError
from shared.subjects import room_token

log = logging.getLogger(__name__)

CONTROL_QUEUE_MAX: Final = 10_000
SOCKET_SUBJECT_LINGER_S: Final = 1.0
HUNG_SERVER_ROUND_TRIPS: Final = 3
"""Failed readiness round trips in a row, while connected, before leaving the server."""
FIXED_SUBSCRIPTIONS: Final = 4
"""blast, all-gateways requests, heartbeats, and this gateway's own subject."""

Disconnect = Callable[[str], Awaitable[None]]


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        broker: Broker,
        metrics: GatewayMetrics,
        disconnect: Disconnect,
    ) -> None:
        self.settings = settings
        self.subjects = settings.subjects
        self.broker = broker
        self.metrics = metrics
        self.rooms = LocalRooms()
        self.peers = Peers(settings.gateway_id, settings.heartbeat_interval_s)
        self._disconnect = disconnect
        self.fanout = Fanout(metrics)
        self.room_interest = Interest(
            broker,
            self.subjects.room,
            self._room_handler,
            lambda room: bool(self.rooms.members(room)),
            settings.unsubscribe_linger_s,
        )
        self._socket_subs: dict[str, int] = {}
        self._control: asyncio.Queue[tuple[str, bytes, bytes]] = asyncio.Queue(CONTROL_QUEUE_MAX)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._slow: set[str] = set()
        self.draining = False
        self.last_round_trip: float = 0.0
        # labelled children looked up once: these are hit for every message
        self._received = {k: metrics.broker_messages.labels(k) for k in ("room", "blast")}
        self._warnings = Throttled(log)
        self._observe_lag = metrics.lag.observe
        # gauges read live state at scrape time: nothing to keep in step
        metrics.connections.set_function(lambda: self.rooms.socket_count)
        metrics.rooms.set_function(lambda: self.rooms.room_count)
        metrics.broker_subscriptions.set_function(
            lambda: self.room_interest.count + len(self._socket_subs) + FIXED_SUBSCRIPTIONS
        )

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        s = self.subjects
        await self.broker.subscribe(s.blast, self._on_blast)
        await self.broker.subscribe(s.gateways, self._enqueue_cluster)
        await self.broker.subscribe(s.heartbeat, self._on_heartbeat)
        await self.broker.subscribe(s.gateway(self.settings.gateway_id), self._on_direct)
        await self.broker.publish(s.heartbeat, self.peers.beat(hello=True))
        await self.broker.flush()
        self._tasks = [
            asyncio.create_task(self._control_loop(), name="control"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._ready_loop(), name="ready-check"),
        ]
        await self._check_round_trip()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.room_interest.close()
        if self.broker.connected:
            try:
                await self.broker.publish(self.subjects.heartbeat, self.peers.beat(down=True))
                await self.broker.flush(timeout=1.0)
            except SailcastError:
                log.warning("could not announce shutdown to peers")

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- sockets ---------------------------------------------------------------------
    def connection(self, sid: str) -> Connection | None:
        """The local connection of a socket id, if it is here."""
        return self.fanout.get(sid)

    async def socket_connected(self, conn: Connection) -> None:
        """Register a socket and its own-id room; return once both are routable."""
        sid = conn.sid
        self.rooms.add_socket(sid)
        self.fanout.attach(conn)
        self.rooms.join(sid, sid)
        self._socket_subs[sid] = await self.broker.subscribe(
            self.subjects.socket(sid), self._socket_handler(sid)
        )
        await self.room_interest.want(sid)
        if self.broker.connected:
            # The client learns its id right after this; a worker may address it at once.
            try:
                await self.broker.flush()
            except SailcastError:
                log.warning("NATS flush failed while registering a socket", extra={"sid": sid})

    async def socket_disconnected(self, sid: str) -> None:
        self.fanout.detach(sid)  # the engine ended its transport already
        self._slow.discard(sid)
        for room in self.rooms.remove_socket(sid):
            self.room_interest.unwant(room, now=room == sid)
        sub = self._socket_subs.pop(sid, None)
        if sub is not None:
            # Keep answering "no such socket" for a moment: a request already on its way
            # then fails fast instead of timing out.
            self._spawn(self._unsubscribe_later(sub))

    async def _unsubscribe_later(self, sub: int) -> None:
        await asyncio.sleep(SOCKET_SUBJECT_LINGER_S)
        await self.broker.unsubscribe(sub)

    def cut_off_slow(self, sid: str, reason: str) -> None:
        """A socket over its outbound bound: its transport is already aborted (see
        gateway/engine/connection.py); take it out of its rooms and the namespace."""
        if sid in self._slow:
            return
        self._slow.add(sid)
        self.metrics.slow_disconnects.inc()
        self.metrics.drops.labels("slow_client").inc()
        log.warning("socket stopped reading (%s); disconnecting it", reason, extra={"sid": sid})
        self._spawn(self._disconnect(sid))

    # -- data path -------------------------------------------------------------------
    def _room_handler(self, room: str) -> Handler:
        def on_room_message(subject: bytes, reply: bytes, data: bytes) -> None:
            self._on_room_message(room, data)

        return on_room_message

    def _decode(self, data: bytes, kind: str) -> DataMessage | None:
        self._received[kind].inc()
        try:
            return decode_data(data)
        except MalformedEnvelope as exc:
            self.metrics.drops.labels("malformed").inc()
            self._warnings.warning("malformed", "dropped a malformed %s message: %s", kind, exc)
            return None

    def _on_room_message(self, room: str, data: bytes) -> None:
        msg = self._decode(data, "room")  # decoded even without members: junk is counted
        if msg is None:
            return
        members = self.rooms.members(room)
        if not members:
            return
        recipients: Iterable[str] = members
        if len(msg.rooms) > 1:
            recipients = self._first_room_members(room, members, msg.rooms)
        self.fanout.deliver(event_packet(msg.args), recipients, msg.omit)
        if msg.ts is not None:  # optional for foreign publishers: no lag to measure
            self._observe_lag(max(0.0, time.time() - msg.ts))

    def _first_room_members(
        self, room: str, members: set[str] | frozenset[str], targets: tuple[str, ...]
    ) -> list[str]:
        """A socket in several target rooms gets the message once: from the first of them
        (in the publisher's order) that it belongs to."""
        try:
            before = targets[: targets.index(room)]
        except ValueError:
            return list(members)
        earlier = [self.rooms.members(r) for r in before]
        return [m for m in members if not any(m in e for e in earlier)]

    def _on_blast(self, subject: bytes, reply: bytes, data: bytes) -> None:
        msg = self._decode(data, "blast")
        if msg is None:
            return
        if msg.kind != KIND_BLAST:  # a well-formed room message on the blast subject
            self.metrics.drops.labels("misrouted").inc()
            log.warning("dropped a %r message sent to the blast subject", msg.kind)
            return
        self.fanout.deliver(event_packet(msg.args), list(self.rooms.sockets()), msg.omit)
        if msg.ts is not None:  # optional for foreign publishers: no lag to measure
            self._observe_lag(max(0.0, time.time() - msg.ts))

    # -- control path ----------------------------------------------------------------
    def _socket_handler(self, sid: str) -> Handler:
        def on_socket_request(subject: bytes, reply: bytes, data: bytes) -> None:
            self._enqueue(sid, reply, data)

        return on_socket_request

    def _enqueue_cluster(self, subject: bytes, reply: bytes, data: bytes) -> None:
        self._enqueue("", reply, data)

    def _enqueue(self, sid: str, reply: bytes, data: bytes) -> None:
        self.metrics.broker_messages.labels("control").inc()
        try:
            self._control.put_nowait((sid, reply, data))
        except asyncio.QueueFull:
            self.metrics.drops.labels("control_overload").inc()
            log.error("control queue full; dropped a request")

    async def _control_loop(self) -> None:
        while True:
            sid, reply, data = await self._control.get()
            kind = "?"
            try:
                req = decode_request(data)
                kind = req["k"]
                if sid:
                    answer = await self._apply_socket_request(sid, kind, req)
                else:
                    answer = await self._apply_cluster_request(kind, req)
                outcome = "ok" if answer.get("ok") else "refused"
            except (MalformedEnvelope, UsageError, KeyError) as exc:
                answer = {"ok": False, "error": "bad_request", "message": str(exc)}
                outcome = "malformed"
                log.warning("bad control request: %s", exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                answer = {"ok": False, "error": "internal", "message": str(exc)}
                outcome = "error"
                log.exception("control request %s failed", kind)
            self.metrics.control_requests.labels(
                kind if kind in _KNOWN_KINDS else "other", outcome
            ).inc()
            if reply:
                try:
                    await self.broker.publish(reply.decode(), encode_reply(**answer))
                except (SailcastError, UnicodeDecodeError) as exc:  # never stop the loop
                    log.warning("could not answer a %s request: %s", kind, exc)

    async def _apply_socket_request(
        self, sid: str, kind: str, req: dict[str, Any]
    ) -> dict[str, Any]:
        if not self.rooms.has_socket(sid):
            return {"ok": False, "error": "no_such_socket"}
        if kind == "join":
            rooms = room_list(req.get("rooms"), "rooms")
            limit = self.settings.max_rooms_per_socket
            current = self.rooms.rooms_of(sid)
            if len(current | set(rooms)) > limit:
                self.metrics.refusals.labels("max_rooms_per_socket").inc()
                return {
                    "ok": False,
                    "error": "limit",
                    "message": f"socket {sid} would be in more than {limit} rooms",
                }
            await self._join(sid, rooms)
            return {"ok": True}
        if kind == "leave":
            self._leave(sid, room_list(req.get("rooms"), "rooms"))
            return {"ok": True}
        if kind == "rooms":
            return {"ok": True, "rooms": sorted(self.rooms.rooms_of(sid))}
        if kind == "disconnect":
            self._spawn(self._disconnect(sid))
            return {"ok": True}
        return {"ok": False, "error": "unknown_kind", "message": kind}

    async def _apply_cluster_request(self, kind: str, req: dict[str, Any]) -> dict[str, Any]:
        base = {"gw": self.settings.gateway_id, "peers": self.peers.alive()}
        if kind == "ping":
            return {"ok": True, **base}
        src = req.get("src")
        if not isinstance(src, str) or not src:
            raise MalformedEnvelope("src must be a non-empty string")
        members = list(self.rooms.members(src))
        refused = 0
        if kind == "addm":
            dst = room_list(req.get("dst"), "dst")
            for m in members:
                refused += await self._join(m, dst)
        elif kind == "remm":
            dst = room_list(req.get("dst"), "dst")
            for m in members:
                self._leave(m, dst)
        elif kind == "leaveall":
            for m in members:
                self._leave(m, [r for r in self.rooms.rooms_of(m) if r != m])
        else:
            return {"ok": False, "error": "unknown_kind", "message": kind, **base}
        answer = {"ok": True, "n": len(members), **base}
        if refused:
            answer["refused"] = refused  # joins over --max-rooms-per-socket
        return answer

    async def _join(self, sid: str, rooms: list[str]) -> int:
        """Join what the room limit allows; the number of joins it refused."""
        limit = self.settings.max_rooms_per_socket
        refused = 0
        for room in rooms:
            if not self.rooms.has_socket(sid):  # disconnected while we awaited NATS
                break
            current = self.rooms.rooms_of(sid)
            if room not in current and len(current) >= limit:
                self.metrics.refusals.labels("max_rooms_per_socket").inc()
                self._warnings.warning(
                    "max_rooms",
                    "socket is in %d rooms; not joining more",
                    limit,
                    extra={"sid": sid},
                )
                refused += 1
                continue
            if self.rooms.join(sid, room) or room not in self.room_interest:
                await self.room_interest.want(room)
        return refused

    def _leave(self, sid: str, rooms: list[str]) -> None:
        for room in rooms:
            if self.rooms.leave(sid, room):
                self.room_interest.unwant(room)

    # -- peers and readiness ---------------------------------------------------------
    def _on_heartbeat(self, subject: bytes, reply: bytes, data: bytes) -> None:
        try:
            answer_now = self.peers.observe(data)
        except ValueError:
            self.metrics.drops.labels("malformed").inc()
            return
        if answer_now:
            self._spawn(self.broker.publish(self.subjects.heartbeat, self.peers.beat()))

    def _on_direct(self, subject: bytes, reply: bytes, data: bytes) -> None:
        if reply:
            self._spawn(
                self.broker.publish(reply.decode(), encode_reply(gw=self.settings.gateway_id))
            )

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            if self.broker.connected:
                try:
                    await self.broker.publish(self.subjects.heartbeat, self.peers.beat())
                except SailcastError:
                    log.debug("heartbeat not sent", exc_info=True)

    async def _check_round_trip(self) -> bool:
        """A request to ourselves through NATS: proves publish, subscribe and delivery work."""
        try:
            await self.broker.request(
                self.subjects.gateway(self.settings.gateway_id),
                encode_request("ping"),
                timeout=max(1.0, self.settings.ready_check_interval_s),
            )
        except SailcastError as exc:
            log.warning("NATS round trip failed: %s", exc)
            return False
        self.last_round_trip = time.monotonic()
        return True

    async def _ready_loop(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.settings.ready_check_interval_s)
            if self.broker.connected:
                failures = 0 if await self._check_round_trip() else failures + 1
                if failures >= HUNG_SERVER_ROUND_TRIPS:
                    # Connected but nothing comes back: a frozen server or a blackholed
                    # path. Pings would take ~10 s more to notice; leave it now.
                    log.error("NATS server unresponsive; reconnecting to another server")
                    failures = 0
                    await self.broker.force_reconnect()
            self.metrics.nats_connected.set(1 if self.broker.connected else 0)
            self.metrics.ready.set(1 if self.ready else 0)

    @property
    def ready(self) -> bool:
        fresh = (
            time.monotonic() - self.last_round_trip < 3 * self.settings.ready_check_interval_s + 1
        )
        loops_alive = all(not t.done() for t in self._tasks)
        return self.broker.connected and fresh and not self.draining and loops_alive

    async def on_nats_reconnected(self) -> None:
        """nats-py re-sent every SUB; check the path at once so readiness recovers fast."""
        self.metrics.nats_reconnects.inc()
        self.metrics.nats_connected.set(1)
        await self._check_round_trip()


def room_list(value: object, what: str) -> list[str]:
    """A request's room names, every one checked before anything changes (a name that
    cannot become a subject would otherwise be half-joined)."""
    rooms = str_list(value, what)
    for room in rooms:
        room_token(room)
    return rooms


_KNOWN_KINDS: Final = frozenset(
    {"join", "leave", "rooms", "disconnect", "addm", "remm", "leaveall", "ping"}
)
