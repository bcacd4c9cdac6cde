"""Presence on one gateway: membership changes in, deltas on NATS out and in, events to
the local members (docs/presence.md, "Presence events").

The core tells `Presence` of every membership change (`joined`, `left`, `socket_gone`);
rooms without presence cost one cached rule lookup per change, nothing on the data
path. Once per window (`--presence-interval-s`) the rooms that changed are flushed:
this gateway's changed facts are published on the room's presence subject (the whole
state, with `hello`, for a room it starts holding), and the members are told the
difference between what they were told and the merged view now (`presence`), a socket
new in the room the whole view (`presence_state`). Count-only rooms send
`presence_count` every `--presence-count-interval-s` when it changed.

Messages from other gateways are merged into the room's view inline in the broker's
reader (`on_message`). A gateway declared dead by the heartbeats (`gateway/peers.py`) or
announcing `down` has its facts dropped (`_sweep`, every heartbeat interval). After a
NATS reconnect every room's whole state is re-sent, with `hello`.

Publishing and subscribing go through one ordered queue and one task, so a room's
subscription precedes its hello, and one room's messages leave in `seq` order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Final, TypeVar

from gateway.broker import Broker
from gateway.identities import Identities
from gateway.interest import Interest, LoopScheduler, Scheduler, Timer
from gateway.logs import Throttled
from gateway.metrics import GatewayMetrics
from gateway.presence.local import LocalRoom
from gateway.presence.rules import Mode, RuleCache
from gateway.settings import PresenceSettings
from shared.errors import MalformedEnvelope
from shared.presence import (
    EVENT_COUNT,
    EVENT_PRESENCE,
    EVENT_STATE,
    Fact,
    Info,
    PresenceDelta,
    PresenceHello,
    PresenceMessage,
    PresenceState,
    decode_presence,
    encode_presence,
    fact_size,
    socket_key,
    user_key,
)
from shared.subjects import Subjects

log = logging.getLogger(__name__)

PART_MAX_BYTES: Final = 256 * 1024
"""A state or delta is cut into parts of about this size (NATS' default payload limit is
1 MiB)."""
HELLO_GRACE_S: Final = 2.0
"""After our hello, a holder new to us is not asked again: its answer is on the way."""
DROPPED_MEMORY_S: Final = 300.0
"""How long a dead gateway's rooms are remembered, to ask it again if it was only
stalled (after that its next delta in a room is seen as a gap)."""
OPS_MAX: Final = 100_000
"""Publishes and subscribes waiting for the sender; past it a room resends its state."""

T = TypeVar("T")

Deliver = Callable[[str, dict[str, Any], Collection[str]], None]
"""(event, payload, recipients): one packet built once, handed to every recipient."""


class Presence:
    def __init__(
        self,
        settings: PresenceSettings,
        *,
        gateway_id: str,
        subjects: Subjects,
        broker: Broker,
        identities: Identities,
        alive: Callable[[], list[str]],
        is_socket: Callable[[str], bool],
        deliver: Deliver,
        metrics: GatewayMetrics,
        heartbeat_interval_s: float,
        linger_s: float,
        scheduler: Scheduler | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        self._subjects = subjects
        self._broker = broker
        self._identities = identities
        self._alive = alive
        self._is_socket = is_socket
        self._deliver = deliver
        self._metrics = metrics
        self._rules = RuleCache(settings.rules)
        self._scheduler = scheduler or LoopScheduler()
        self._clock = clock
        self._sweep_s = heartbeat_interval_s
        self._dead_after_s = 3 * heartbeat_interval_s
        self.inc = time.time_ns()
        """This process' incarnation: orders its messages after a restarted one's."""
        self._seq = 0
        self.rooms: dict[str, LocalRoom] = {}
        self.interest = Interest(
            broker, subjects.presence, self.rooms.__contains__, linger_s, scheduler
        )
        self._dirty: set[str] = set()
        self._window: Timer | None = None
        self._periodic: Timer | None = None
        self._last_count = float("-inf")
        self._heard: dict[str, float] = {}
        """Gateway → when a presence message of it last arrived."""
        self._known: set[str] = set()
        """Gateways of `_heard` the heartbeats have shown alive."""
        self._dropped: dict[str, tuple[float, set[str]]] = {}
        """Gateways declared dead → (when, rooms their facts were dropped from): asked
        again if they come back within DROPPED_MEMORY_S."""
        self._ops: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue(OPS_MAX)
        self._sender: asyncio.Task[None] | None = None
        self._stopped = False
        self._warnings = Throttled(log)
        self._sent = metrics.presence_deltas.labels("sent")
        self._received = metrics.presence_deltas.labels("received")
        self._events = {
            k: metrics.presence_events.labels(k) for k in ("join", "leave", "state", "count")
        }

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop(), name="presence")

    async def stop(self) -> None:
        self._stopped = True
        for timer in (self._window, self._periodic):
            if timer is not None:
                timer.cancel()
        self._window = self._periodic = None
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        self.interest.close()

    # -- membership (called by the core) ---------------------------------------------
    def joined(self, sid: str, rooms: Iterable[str]) -> None:
        for room in rooms:
            mode = self._rules.mode_for(room)
            if mode is None or room == sid or self._is_socket(room):
                continue
            local = self.rooms.get(room)
            if local is None:
                local = self.rooms[room] = LocalRoom(room, mode)
                self._queue("sub", room, b"")
            local.add(sid, self._key(sid, mode))
            self._touch(room)

    def left(self, sid: str, rooms: Iterable[str]) -> None:
        for room in rooms:
            local = self.rooms.get(room)
            if local is not None and sid in local.key_of:
                local.remove(sid)
                self._touch(room)

    def socket_gone(self, sid: str, rooms: Iterable[str]) -> None:
        """A socket disconnected (or was evicted): it leaves its presence rooms."""
        self.left(sid, rooms)

    def _key(self, sid: str, mode: Mode) -> str | None:
        uid = self._identities.user_of(sid)
        if uid is not None:
            return user_key(uid)
        return socket_key(sid) if mode is Mode.MEMBERS else None

    def _info(self, sid: str) -> Info:
        return self._identities.get(sid).info

    # -- NATS ------------------------------------------------------------------------
    def on_message(self, room: str, data: bytes) -> None:
        """A message on a presence subject (inline in the broker's reader); our own,
        echoed back, is neither counted nor applied."""
        try:
            msg = decode_presence(data)
        except MalformedEnvelope as exc:
            self._metrics.drops.labels("malformed").inc()
            self._warnings.warning("malformed", "dropped a malformed presence message: %s", exc)
            return
        if msg.gw == self.gateway_id:
            return
        self._received.inc()
        local = self.rooms.get(room)
        if local is None:
            return
        self._heard[msg.gw] = self._clock()
        if isinstance(msg, PresenceHello):
            if not msg.to or self.gateway_id in msg.to:
                local.send_state = True
                self._touch(room)
            return
        if isinstance(msg, PresenceState) and msg.hello and msg.first:
            local.send_state = True  # answer with ours
        if local.view.apply(msg) and self._clock() - local.asked_at > HELLO_GRACE_S:
            local.ask.add(msg.gw)
        self._touch(room)

    def reconnected(self) -> None:
        """After a NATS reconnect: deltas may have been lost both ways; every room's
        whole state goes out again, asking every holder for theirs."""
        for room, local in self.rooms.items():
            local.send_state = local.hello = True
            self._touch(room)

    # -- windows ---------------------------------------------------------------------
    def _touch(self, room: str) -> None:
        if self._stopped:  # sockets still leaving during shutdown: peers drop us on `down`
            return
        self._dirty.add(room)
        if self._window is None:
            self._window = self._scheduler.call_later(self.settings.presence_interval_s, self.flush)
        if self._periodic is None:
            self._periodic = self._scheduler.call_later(self._period_s, self._tick)

    @property
    def _period_s(self) -> float:
        return min(self._sweep_s, self.settings.presence_count_interval_s)

    def flush(self) -> None:
        """One coalescing window: publish what changed here, tell the members what
        changed in the room."""
        self._window = None
        dirty, self._dirty = self._dirty, set()
        for room in sorted(dirty):
            local = self.rooms.get(room)
            if local is not None:
                try:
                    self._flush(local)
                except Exception:  # one room's failure never stops the others
                    self._metrics.drops.labels("handler_error").inc()
                    log.exception("presence flush failed")

    def _flush(self, local: LocalRoom) -> None:
        room, view = local.room, local.view
        mine = view.facts_of(self.gateway_id)
        if not local.key_of:  # nobody here any more: say so, and let the room go
            if local.prev:  # it published something: its facts and sockets go
                self._publish_delta(local, [], list(mine), 0)
            del self.rooms[room]
            self.interest.unwant(room)
            return
        add, remove, cancelled = local.changes(mine, self._info)
        if local.send_state:
            view.apply_own(self.gateway_id, add, remove, local.sockets)
            self._publish_state(local, local.local_facts(self._info))
        elif add or remove or view.sockets_of(self.gateway_id) != local.sockets:
            view.apply_own(self.gateway_id, add, remove, local.sockets)
            self._publish_delta(local, add, remove, local.sockets)
        if local.ask:
            self._queue(
                "pub",
                room,
                encode_presence(PresenceHello(self.gateway_id, tuple(sorted(local.ask)))),
            )
            local.ask.clear()
            local.asked_at = self._clock()
        newcomers = local.newcomers & local.key_of.keys()
        local.newcomers.clear()
        if local.mode is Mode.COUNT:
            view.touched.clear()
            view.transitions = 0
            if newcomers:
                sockets, users = local.count()
                self._deliver(
                    EVENT_COUNT, {"room": room, "sockets": sockets, "users": users}, newcomers
                )
                self._events["count"].inc(len(newcomers))
            return
        joins, leaves, coalesced = local.diff()
        coalesced += cancelled
        if coalesced:
            self._metrics.presence_coalesced.inc(coalesced)
        if joins or leaves:
            old = [s for s in local.key_of if s not in newcomers]
            if old:  # the members that already have a view
                self._deliver(EVENT_PRESENCE, {"room": room, "joins": joins, "leaves": leaves}, old)
                self._events["join"].inc(len(joins))
                self._events["leave"].inc(len(leaves))
        if newcomers:
            self._deliver(
                EVENT_STATE, {"room": room, "members": local.members_payload()}, newcomers
            )
            self._events["state"].inc(len(newcomers))

    def _tick(self) -> None:
        """Every heartbeat interval (or count interval, if shorter) while rooms are
        held: drop dead gateways' facts, send counts that changed."""
        self._periodic = None
        if not self.rooms or self._stopped:
            return
        try:
            self._sweep()
            self._counts()
            self._marks()
        except Exception:  # never stops the next tick
            self._metrics.drops.labels("handler_error").inc()
            log.exception("presence sweep failed")
        self._periodic = self._scheduler.call_later(self._period_s, self._tick)

    def _sweep(self) -> None:
        """A gateway the heartbeats knew and no longer do (expired, or `down`) is dead
        now; one never heard from there, after the heartbeats' TTL since its last
        presence message."""
        now, alive = self._clock(), set(self._alive())
        dead = []
        for gw, heard in self._heard.items():
            if gw in alive:
                self._known.add(gw)
            elif gw in self._known or now - heard > self._dead_after_s:
                dead.append(gw)
        for gw in dead:
            del self._heard[gw]
            self._known.discard(gw)
            for room, local in self.rooms.items():
                if local.view.drop(gw):
                    self._dropped.setdefault(gw, (now, set()))[1].add(room)
                    self._touch(room)
        for gw, (when, _) in list(self._dropped.items()):
            if now - when > DROPPED_MEMORY_S:
                del self._dropped[gw]
        for gw in [g for g in self._dropped if g in alive]:
            for room in self._dropped.pop(gw)[1]:
                back = self.rooms.get(room)
                if back is not None:
                    back.ask.add(gw)
                    self._touch(room)

    def _marks(self) -> None:
        """After a room's last message, one empty delta a period later: receivers that
        missed that message see the gap and ask (NATS is at-most-once)."""
        now = self._clock()
        for room, local in self.rooms.items():
            if (
                local.mark_due
                and room not in self._dirty
                and now - local.last_sent >= self._period_s
            ):
                sockets = local.view.sockets_of(self.gateway_id)
                self._publish_delta(local, [], [], sockets)
                local.mark_due = False

    def _counts(self) -> None:
        now = self._clock()
        if now - self._last_count < self.settings.presence_count_interval_s - 1e-9:
            return
        self._last_count = now
        for room, local in self.rooms.items():
            if local.mode is not Mode.COUNT:
                continue
            count = local.count()
            if count != local.told_count:
                local.told_count = count
                members = list(local.key_of)
                self._deliver(
                    EVENT_COUNT, {"room": room, "sockets": count[0], "users": count[1]}, members
                )
                self._events["count"].inc(len(members))

    # -- publishing ------------------------------------------------------------------
    def _next(self, local: LocalRoom) -> tuple[int, int]:
        local.last_sent, local.mark_due = self._clock(), True
        self._seq += 1
        prev, local.prev = local.prev, self._seq
        return self._seq, prev

    def _publish_state(self, local: LocalRoom, facts: dict[str, Info]) -> None:
        hello = local.hello
        local.send_state = local.hello = False
        if hello:
            local.asked_at = self._clock()
        parts = _parts([Fact(k, i) for k, i in facts.items()], fact_size)
        for n, part in enumerate(parts):
            seq, prev = self._next(local)
            msg = PresenceState(
                self.gateway_id,
                self.inc,
                seq,
                0 if n == 0 else prev,
                local.sockets,
                tuple(part),
                first=n == 0,
                last=n == len(parts) - 1,
                hello=hello,
            )
            self._queue("pub", local.room, encode_presence(msg))

    def _publish_delta(
        self, local: LocalRoom, add: list[Fact], remove: list[str], sockets: int
    ) -> None:
        adds = _parts(add, fact_size)
        removes = _parts(remove, lambda k: len(k) + 3)
        for n in range(max(len(adds), len(removes))):
            seq, prev = self._next(local)
            part_add = tuple(adds[n]) if n < len(adds) else ()
            part_del = tuple(removes[n]) if n < len(removes) else ()
            msg: PresenceMessage = PresenceDelta(
                self.gateway_id, self.inc, seq, prev, sockets, part_add, part_del
            )
            self._queue("pub", local.room, encode_presence(msg))

    def _queue(self, op: str, room: str, data: bytes) -> None:
        try:
            self._ops.put_nowait((op, room, data))
        except asyncio.QueueFull:
            self._metrics.drops.labels("presence_overload").inc()
            self._warnings.warning(
                "presence_overload", "presence queue full; a room will resend its state"
            )
            local = self.rooms.get(room)
            if local is not None:
                local.send_state = True

    async def _send_loop(self) -> None:
        while True:
            op, room, data = await self._ops.get()
            try:
                if op == "sub":
                    if room in self.rooms:
                        await self.interest.want(room)
                else:
                    await self._broker.publish(self._subjects.presence(room), data)
                    self._sent.inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # counted and logged; a reconnect resends states
                self._metrics.drops.labels("presence_send").inc()
                self._warnings.warning("presence_send", "presence %s not sent: %s", op, exc)


def _parts(items: Sequence[T], size_of: Callable[[T], int]) -> list[list[T]]:
    """`items` cut into runs of about PART_MAX_BYTES; at least one (maybe empty) run."""
    parts: list[list[T]] = [[]]
    size = 0
    for item in items:
        n = size_of(item)
        if parts[-1] and size + n > PART_MAX_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += n
    return parts
