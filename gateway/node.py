"""One gateway: local connections, their rooms, and the NATS traffic that feeds them.

Every message from the broker reaches ONE handler (`_on_message`), which dispatches by
the subject's kind (shared.subjects): a room message or a blast is decoded once,
becomes one packet, and is sent to every local member (data path, inline in the
broker's reader); a request for one socket or for every gateway is queued for the
control loop, which applies requests one at a time, in arrival order, and answers
each only once any NATS subscription it needed has been sent ahead of the reply
(control path, shared.control); heartbeats update the peers; a ping on this gateway's
own subject is answered at once.

A room message WITH headers is a history room's, re-published by the history stream with
its position (gateway.history.feed): it goes through the feed, one ordered pipeline that
repairs gaps, then back here to be fanned out with the offset variants
(`_deliver_history`). A message without headers takes today's path, unchanged.

The core knows connections only as `gateway.engine.api.Connection`, and the bus only as
`gateway.broker.Broker`: unit-tested on MemoryBroker with recording connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, Final

from gateway.broker import Broker, BrokerEvent
from gateway.broker.headers import header_int
from gateway.engine import Connection, OutboundPacket, event_packet
from gateway.fanout import NULL_SUFFIX, Fanout, Variants, last_arg_is_string, offset_suffix
from gateway.history.feed import HistoryFeed, StoredReader, StreamLike
from gateway.identities import ANONYMOUS, Identities, Identity
from gateway.interest import Interest, Scheduler
from gateway.logs import Throttled
from gateway.metrics import GatewayMetrics
from gateway.pacing import Pacer
from gateway.peers import Peers
from gateway.rooms import LocalRooms
from gateway.settings import GatewaySettings
from shared.control import (
    SOCKET_KINDS,
    AddMembers,
    Applied,
    ClusterRequest,
    Disconnect,
    Done,
    ErrorCode,
    Evict,
    Join,
    Leave,
    LeaveAll,
    Ping,
    Pong,
    Refused,
    RemoveMembers,
    Reply,
    Rooms,
    RoomsOf,
    SocketRequest,
    UnknownKind,
    decode_request,
    encode_reply,
    encode_request,
)
from shared.envelope import KIND_BLAST, KIND_MULTI_ROOM, DataMessage, decode_data
from shared.errors import MalformedEnvelope, SailcastError, TransportError
from shared.subjects import SubjectKind
from shared.users import is_reserved, user_room

log = logging.getLogger(__name__)

CONTROL_QUEUE_MAX: Final = 10_000
SOCKET_SUBJECT_LINGER_S: Final = 1.0
"""A gone socket's subject stays subscribed this long, so a request already on its way
gets "no_such_socket" at once instead of timing out."""
HUNG_SERVER_ROUND_TRIPS: Final = 3
"""Failed readiness round trips in a row, while connected, before leaving the server."""
FIXED_SUBSCRIPTIONS: Final = 5
"""blast, multi-room broadcasts, all-gateways requests, heartbeats, and this gateway's
own subject."""

_CLUSTER: Final = ""
"""The control queue's target for a request on `gw.all` (a socket request names its sid)."""


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        broker: Broker,
        metrics: GatewayMetrics,
        *,
        scheduler: Scheduler | None = None,
        clock: Callable[[], float] = time.monotonic,
        history_stream: StreamLike | None = None,
        history_reader: StoredReader | None = None,
    ) -> None:
        self.settings = settings
        self.subjects = settings.subjects
        self.broker = broker
        self.metrics = metrics
        self.rooms = LocalRooms()
        self.identities = Identities()
        """Each local socket's user id and presence info (set at admission)."""
        self.peers = Peers(settings.gateway_id, settings.core.heartbeat_interval_s, clock)
        self.fanout = Fanout(metrics)
        self.pacer = Pacer(self.fanout, self._backlog_full)
        self._clock = clock
        self.history_stream = history_stream
        """The history stream (gateway.history.stream), None with history off."""
        self.feed: HistoryFeed | None = None
        if history_stream is not None:
            reader = history_reader or _direct_get(broker, history_stream)
            self.feed = HistoryFeed(
                history_stream, reader, self.subjects, self._deliver_history, metrics
            )
        self.room_interest = Interest(
            broker,
            self.subjects.room,
            self._room_wanted,
            settings.core.unsubscribe_linger_s,
            scheduler,
        )
        self.socket_interest = Interest(
            broker, self.subjects.socket, self.rooms.has_socket, SOCKET_SUBJECT_LINGER_S, scheduler
        )
        self._own_subject = self.subjects.gateway(settings.gateway_id)
        self._control: asyncio.Queue[tuple[str, bytes, bytes]] = asyncio.Queue(CONTROL_QUEUE_MAX)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._slow: set[str] = set()
        self.draining = False
        self.last_round_trip: float = 0.0
        self.on_membership: Callable[[str, Collection[str], Collection[str]], None] | None = None
        """Told (sid, rooms joined, rooms left) when a socket's rooms change through a
        request (gateway/recovery keeps its session record in step)."""
        self.on_evicted: Callable[[str], None] | None = None
        """Told the sid of a socket evicted by a takeover (no after-disconnect hook)."""
        # labelled children looked up once: these are hit for every message
        self._received = {
            k: metrics.broker_messages.labels(k) for k in ("room", "multi_room", "blast")
        }
        self._handler_errors = metrics.drops.labels("handler_error")
        self._warnings = Throttled(log)
        self._observe_lag = metrics.lag.observe
        self._parse = self.subjects.parse
        broker.set_handler(self._on_message)
        broker.set_listener(self._on_broker_event)
        # gauges read live state at scrape time: nothing to keep in step
        metrics.connections.set_function(lambda: self.rooms.socket_count)
        metrics.rooms.set_function(lambda: self.rooms.room_count)
        metrics.sockets_with_user.set_function(lambda: self.identities.with_user)
        metrics.broker_subscriptions.set_function(
            lambda: self.room_interest.count + self.socket_interest.count + FIXED_SUBSCRIPTIONS
        )

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        s = self.subjects
        if self.feed is not None:
            await self.feed.start()
        for subject in (s.blast, s.multi_room, s.gateways, s.heartbeat, self._own_subject):
            await self.broker.subscribe(subject)
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
        if self.feed is not None:
            await self.feed.stop()
        self.room_interest.close()
        self.socket_interest.close()
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

    # -- connections -----------------------------------------------------------------
    async def socket_connected(
        self,
        conn: Connection,
        *,
        join_own_room: bool = True,
        identity: Identity = ANONYMOUS,
        rooms: Collection[str] = (),
    ) -> None:
        """Register a connection, who it is, its own-id room and its rooms at connect
        (the user room and `rooms`, through the join path); return once all are
        routable. Raises TransportError, with nothing left registered, if NATS refuses
        them. A recovering socket (`join_own_room=False`) gets its own-id room's
        subscription but becomes a member only with its other rooms (`join_restored`)."""
        sid = conn.sid
        if self.feed is not None and conn.protocol == 4:
            conn.offsets = True  # CSR is on for v4 clients (v3: only with the add-on)
        self.rooms.add_socket(sid)
        self.fanout.attach(conn)
        self.identities.assign(sid, identity)
        if join_own_room:
            self.rooms.join(sid, sid)
        uid = identity.user_id
        at_connect = [user_room(uid), *rooms] if uid is not None and join_own_room else rooms
        try:
            await self.socket_interest.want(sid)
            await self.room_interest.want(sid)
            if at_connect:
                await self._join_all(sid, at_connect)
                self.metrics.connect_rooms.inc(len(at_connect))
        except TransportError:
            await self.socket_disconnected(sid)
            raise
        if self.broker.connected:
            # The client learns its id right after this; a worker may address it at once.
            try:
                await self.broker.flush()
            except SailcastError:
                log.warning("NATS flush failed while registering a socket", extra={"sid": sid})

    async def socket_disconnected(self, sid: str) -> Connection | None:
        """Forget a connection and its rooms; returns it if it was registered."""
        conn = self.fanout.detach(sid)
        self._slow.discard(sid)
        self.identities.forget(sid)
        if self.feed is not None:
            self.feed.forget_socket(sid)
        for room in self.rooms.remove_socket(sid):
            self.room_interest.unwant(room, now=room == sid)
        self.socket_interest.unwant(sid)
        return conn

    def connection(self, sid: str) -> Connection | None:
        return self.fanout.get(sid)

    # -- recovery (gateway/recovery) ---------------------------------------------------
    async def subscribe_rooms(self, rooms: Iterable[str]) -> None:
        """Hold NATS interest in rooms nobody here is a member of yet (a recovering
        socket's: its live messages are followed while its replay is fetched).
        TransportError when NATS refuses one; `release_rooms` undoes it."""
        for room in rooms:
            await self.room_interest.want(room)

    def release_rooms(self, rooms: Iterable[str]) -> None:
        for room in rooms:
            self.room_interest.unwant(room)

    def join_restored(self, sid: str, rooms: Collection[str]) -> None:
        """Make a recovered socket a member of its rooms at once (no await: nothing
        may be delivered between this and its replay). Their interest is held."""
        if not self.rooms.has_socket(sid):
            return
        for room in rooms:
            self.rooms.join(sid, room)
        if self.on_membership is not None:
            self.on_membership(sid, rooms, ())

    async def evict(self, sid: str) -> bool:
        """A takeover: close the socket's connection as if it had never gone (no
        disconnect reported), forget it; False when it is not here."""
        conn = self.fanout.get(sid)
        if conn is None:
            return False
        conn.evict()
        # its subject goes now, not after the linger: the new holder answers for it
        self.socket_interest.unwant(sid, now=True)
        await self.socket_disconnected(sid)
        if self.on_evicted is not None:
            self.on_evicted(sid)
        return True

    def connections(self) -> list[Connection]:
        return self.fanout.connections()

    def cut_off_slow(self, sid: str, reason: str) -> None:
        """A socket over its outbound bound: its transport is already aborted;
        take it out of its rooms and the namespace."""
        if sid in self._slow:
            return
        self._slow.add(sid)
        self.metrics.slow_disconnects.inc()
        self.metrics.drops.labels("slow_client").inc()
        log.warning("socket stopped reading (%s); disconnecting it", reason, extra={"sid": sid})
        self._disconnect(sid)

    def _disconnect(self, sid: str) -> None:
        conn = self.fanout.get(sid)
        if conn is not None:
            self._spawn(conn.disconnect())

    # -- the one message handler -----------------------------------------------------
    def _on_message(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        try:
            parsed = self._parse(subject)
            if parsed is None:
                self._warnings.warning("subject", "message on a foreign subject %s", subject[:200])
                return
            kind = parsed.kind
            if kind is SubjectKind.ROOM:
                if headers is None:
                    self._on_room_message(parsed.name, data)
                else:
                    self._on_room_headers(parsed.name, data, headers)
            elif kind is SubjectKind.MULTI_ROOM:
                self._on_multi_room(data)
            elif kind is SubjectKind.BLAST:
                self._on_blast(data)
            elif kind is SubjectKind.SOCKET:
                self._enqueue(parsed.name, reply, data)
            elif kind is SubjectKind.GATEWAYS:
                self._enqueue(_CLUSTER, reply, data)
            elif kind is SubjectKind.HEARTBEAT:
                self._on_heartbeat(data)
            elif kind is SubjectKind.GATEWAY:
                self._on_direct(reply)
        except Exception:  # one bad message never stops the reader
            self._handler_errors.inc()
            log.exception("message handler failed on %s", subject[:200])

    # -- data path -------------------------------------------------------------------
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
        recipients: Collection[str] = members
        if len(msg.rooms) > 1:
            recipients = self._first_room_members(room, members, msg.rooms)
        self.pacer.submit(self._packet(msg.args), recipients, msg.omit, len(msg.args))
        if msg.ts is not None:  # optional for foreign publishers: no lag to measure
            self._observe_lag(max(0.0, time.time() - msg.ts))

    def _packet(self, args: bytes) -> OutboundPacket | Variants:
        """A non-history message's packet: with history on, offsets sockets may need a
        trailing null (gateway.fanout.Variants)."""
        if self.feed is None:
            return event_packet(args)
        return Variants(args, NULL_SUFFIX, v4=last_arg_is_string(args))

    def _on_room_headers(self, room: str, data: bytes, headers: bytes) -> None:
        """A room message with headers: the history stream's, with its position, goes
        through the feed; anything else (a publisher's own headers) is a core message."""
        feed = self.feed
        seq = header_int(headers, b"Nats-Sequence") if feed is not None else None
        if feed is None or seq is None:
            self._on_room_message(room, data)
            return
        prev = header_int(headers, b"Nats-Last-Sequence")
        feed.offer(room, data, seq, prev or 0)

    def _deliver_history(self, room: str, data: bytes, seq: int) -> None:
        """The feed hands on one history message, in position order: to the room's
        members but the sockets that had it in their replay, with its offset for the
        sockets that take one."""
        msg = self._decode(data, "room")
        if msg is None:
            return
        members = self.rooms.members(room)
        if not members:
            return
        recipients: Collection[str] = members
        if len(msg.rooms) > 1:
            recipients = self._first_room_members(room, members, msg.rooms)
        assert self.feed is not None
        recipients = self.feed.unskipped(recipients, seq)
        packets = Variants(msg.args, offset_suffix(self.feed.offset(seq)), v4=True)
        self.pacer.submit(packets, recipients, msg.omit, len(msg.args))
        if msg.ts is not None:
            self._observe_lag(max(0.0, time.time() - msg.ts))

    def _room_wanted(self, room: str) -> bool:
        """Interest asks before unsubscribing a room: a room let go starts a new
        position chain when it is subscribed again."""
        if self.rooms.members(room):
            return True
        if self.feed is not None:
            self.feed.forget_room(room)
        return False

    def _backlog_full(self) -> None:
        self.metrics.drops.labels("fanout_backlog").inc()
        self._warnings.warning(
            "fanout_backlog", "fanout backlog full: dropped a message (sockets cannot keep up)"
        )

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

    def _on_multi_room(self, data: bytes) -> None:
        """One message for many rooms: each local member of any of them gets it once.
        Membership is read once, so no join or leave can split the message."""
        msg = self._decode(data, "multi_room")
        if msg is None:
            return
        if msg.kind != KIND_MULTI_ROOM:
            self.metrics.drops.labels("misrouted").inc()
            log.warning("dropped a %r message sent to the multi-room subject", msg.kind)
            return
        members_of = self.rooms.members
        recipients: set[str] = set()
        for room in msg.rooms:
            members = members_of(room)
            if members:
                recipients.update(members)
        if not recipients:
            return
        self.pacer.submit(self._packet(msg.args), recipients, msg.omit, len(msg.args))
        if msg.ts is not None:
            self._observe_lag(max(0.0, time.time() - msg.ts))

    def _on_blast(self, data: bytes) -> None:
        msg = self._decode(data, "blast")
        if msg is None:
            return
        if msg.kind != KIND_BLAST:  # a well-formed room message on the blast subject
            self.metrics.drops.labels("misrouted").inc()
            log.warning("dropped a %r message sent to the blast subject", msg.kind)
            return
        self.pacer.submit(
            self._packet(msg.args), list(self.rooms.sockets()), msg.omit, len(msg.args)
        )
        if msg.ts is not None:  # optional for foreign publishers: no lag to measure
            self._observe_lag(max(0.0, time.time() - msg.ts))

    # -- control path ----------------------------------------------------------------
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
            answer, label, outcome = await self._answer(sid, data)
            self.metrics.control_requests.labels(label, outcome).inc()
            if reply:
                try:
                    await self.broker.publish(reply.decode(), encode_reply(answer))
                except (SailcastError, UnicodeDecodeError) as exc:  # never stop the loop
                    log.warning("could not answer a %s request: %s", label, exc)

    async def _answer(self, sid: str, data: bytes) -> tuple[Reply, str, str]:
        """Apply one request: (the reply, its kind's metric label, the outcome label)."""
        label = "other"
        try:
            req = decode_request(data)
            label = req.kind.value
            if sid == _CLUSTER:
                answer = await self._apply_cluster_request(req)
            else:
                answer = await self._apply_socket_request(sid, req)
            return answer, label, "refused" if isinstance(answer, Refused) else "ok"
        except UnknownKind as exc:
            code, message = ErrorCode.UNKNOWN_KIND, exc.kind
            outcome = "refused"
        except MalformedEnvelope as exc:
            code, message, outcome = ErrorCode.BAD_REQUEST, str(exc), "malformed"
            log.warning("bad control request: %s", exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code, message, outcome = ErrorCode.INTERNAL, str(exc), "error"
            log.exception("control request %s failed", label)
        if sid == _CLUSTER and code is ErrorCode.UNKNOWN_KIND:
            return self._refused(code, message), label, outcome
        return Refused(code, message), label, outcome

    def _refused(self, code: ErrorCode, message: str) -> Refused:
        """A refusal on `gw.all`: it names us and our peers, as an answer there must."""
        return Refused(code, message, self.settings.gateway_id, tuple(self.peers.alive()))

    async def _apply_socket_request(self, sid: str, req: SocketRequest | ClusterRequest) -> Reply:
        if not self.rooms.has_socket(sid):
            return Refused(ErrorCode.NO_SUCH_SOCKET)
        if isinstance(req, Join | Leave) and (reserved := _reserved(req.rooms)):
            return Refused(ErrorCode.BAD_REQUEST, reserved)
        if isinstance(req, Join):
            limit = self.settings.core.max_rooms_per_socket
            if len(self.rooms.rooms_of(sid) | set(req.rooms)) > limit:
                self.metrics.refusals.labels("max_rooms_per_socket").inc()
                return Refused(ErrorCode.LIMIT, f"socket {sid} would be in more than {limit} rooms")
            try:
                await self._join_all(sid, req.rooms)
            except TransportError as exc:
                return Refused(ErrorCode.INTERNAL, f"join not applied: {exc}")
            return Done()
        if isinstance(req, Leave):
            self._leave(sid, req.rooms)
            return Done()
        if isinstance(req, Rooms):
            return RoomsOf(tuple(sorted(self.rooms.rooms_of(sid))))
        if isinstance(req, Disconnect):
            self._disconnect(sid)
            return Done()
        if isinstance(req, Evict):
            await self.evict(sid)
            return Done()
        return Refused(ErrorCode.UNKNOWN_KIND, req.kind.value)  # a cluster kind

    async def _join_all(self, sid: str, rooms: Iterable[str]) -> None:
        """Join every room, or none: when NATS refuses a room's subscription, the rooms
        this call added are left again and TransportError is raised (rollback)."""
        added: list[str] = []
        try:
            for room in rooms:
                if not self.rooms.has_socket(sid):  # disconnected while we awaited NATS
                    break
                if room not in self.rooms.rooms_of(sid):
                    added.append(room)
                if self.rooms.join(sid, room) or room not in self.room_interest:
                    await self.room_interest.want(room)
        except TransportError:
            self._leave(sid, added)
            raise
        if added and self.on_membership is not None and self.rooms.has_socket(sid):
            self.on_membership(sid, added, ())

    async def _apply_cluster_request(self, req: SocketRequest | ClusterRequest) -> Reply:
        gw, peers = self.settings.gateway_id, tuple(self.peers.alive())
        if isinstance(req, Ping):
            return Applied(gw, peers)
        if req.kind in SOCKET_KINDS:
            return self._refused(ErrorCode.UNKNOWN_KIND, req.kind.value)
        assert isinstance(req, AddMembers | RemoveMembers | LeaveAll)
        if isinstance(req, AddMembers | RemoveMembers) and (reserved := _reserved(req.dst)):
            return self._refused(ErrorCode.BAD_REQUEST, reserved)
        members = list(self.rooms.members(req.src))
        refused = 0
        failed: list[str] = []
        if isinstance(req, AddMembers):
            for m in members:
                try:
                    refused += await self._join_within_limit(m, req.dst)
                except TransportError as exc:
                    failed.append(str(exc))
        elif isinstance(req, RemoveMembers):
            for m in members:
                self._leave(m, req.dst)
        else:
            for m in members:
                self._leave(m, [r for r in self.rooms.rooms_of(m) if r != m])
        if failed:
            return self._refused(
                ErrorCode.INTERNAL,
                f"{len(failed)} member(s) of {req.src!r} not joined: {failed[0]}",
            )
        return Applied(gw, peers, len(members), refused)

    async def _join_within_limit(self, sid: str, rooms: Iterable[str]) -> int:
        """Join what the room limit allows (all or nothing, see _join_all); the number
        of joins it refused."""
        limit = self.settings.core.max_rooms_per_socket
        allowed: list[str] = []
        refused = 0
        current = set(self.rooms.rooms_of(sid))
        for room in rooms:
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
            current.add(room)
            allowed.append(room)
        await self._join_all(sid, allowed)
        return refused

    def _leave(self, sid: str, rooms: Iterable[str]) -> None:
        left: list[str] = []
        current = self.rooms.rooms_of(sid)
        for room in rooms:
            if room in current:
                left.append(room)
            if self.rooms.leave(sid, room):
                self.room_interest.unwant(room)
        if left and self.on_membership is not None:
            self.on_membership(sid, (), left)

    # -- peers and readiness ---------------------------------------------------------
    def _on_heartbeat(self, data: bytes) -> None:
        try:
            answer_now = self.peers.observe(data)
        except ValueError:
            self.metrics.drops.labels("malformed").inc()
            return
        if answer_now:
            self._spawn(self.broker.publish(self.subjects.heartbeat, self.peers.beat()))

    def _on_direct(self, reply: bytes) -> None:
        if reply:
            answer = encode_reply(Pong(self.settings.gateway_id))
            self._spawn(self.broker.publish(reply.decode(), answer))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.core.heartbeat_interval_s)
            if self.broker.connected:
                try:
                    await self.broker.publish(self.subjects.heartbeat, self.peers.beat())
                except SailcastError:
                    log.debug("heartbeat not sent", exc_info=True)

    async def _check_round_trip(self) -> bool:
        """A request to ourselves through NATS: proves publish, subscribe and delivery work."""
        try:
            await self.broker.request(
                self._own_subject,
                encode_request(Ping()),
                timeout=max(1.0, self.settings.core.ready_check_interval_s),
            )
        except SailcastError as exc:
            log.warning("NATS round trip failed: %s", exc)
            return False
        self.last_round_trip = self._clock()
        return True

    async def _ready_loop(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.settings.core.ready_check_interval_s)
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
            self._clock() - self.last_round_trip < 3 * self.settings.core.ready_check_interval_s + 1
        )
        loops_alive = all(not t.done() for t in self._tasks)
        return self.broker.connected and fresh and not self.draining and loops_alive

    async def _on_broker_event(self, event: BrokerEvent) -> None:
        if event is BrokerEvent.DISCONNECTED:
            self.metrics.nats_connected.set(0)
            if not self.draining:
                log.warning("NATS connection lost; clients stay connected, reconnecting")
            return
        # nats-py re-sent every SUB; check the path at once so readiness recovers fast.
        log.info("NATS reconnected; subscriptions restored")
        if self.feed is not None:  # quiet history rooms: fetch what the outage took
            self._spawn(self.feed.catch_up())
        self.metrics.nats_reconnects.inc()
        self.metrics.nats_connected.set(1)
        # Say so at once: the SUBs went out first, so this heartbeat proves they are in
        # place. Publishers hold what they published during the outage until every
        # gateway has said it (publisher.hold); `hello` brings the peers' answers too.
        try:
            await self.broker.publish(self.subjects.heartbeat, self.peers.beat(hello=True))
        except SailcastError:
            log.debug("reconnect heartbeat not sent", exc_info=True)
        await self._check_round_trip()


def _reserved(rooms: Iterable[str]) -> str:
    """The refusal of a join or leave naming a reserved room (shared.users): only the
    gateway puts sockets in users' rooms, whoever sends the request. Empty: none."""
    for room in rooms:
        if is_reserved(room):
            return f"room {room[:80]!r} is reserved: rooms under 'sailcast:' are the gateway's"
    return ""


def _direct_get(broker: Broker, stream: StreamLike) -> StoredReader:
    """The production reader: batched Direct Gets on the broker's own NATS connection."""
    from gateway.broker.nats_broker import NatsBroker
    from gateway.history.direct_get import DirectGet

    if not isinstance(broker, NatsBroker):
        raise TypeError("history on a broker without NATS needs a history_reader")
    return DirectGet(broker.client, stream.name)
