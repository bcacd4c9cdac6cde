"""Connection-state recovery at CONNECT (docs/recovery.md, "Sessions and recovery").

A client presents a claim: socket.io-client v4 its `pid` and `offset` in the CONNECT
payload (merged with its auth), the sails.io.js add-on `__sailcast_pid` and
`__sailcast_offset` in the handshake query. The steps (design, issue 11):

1. the session is read from the KV bucket; none, another stream epoch, or a room that
   keeps no history → a fresh session, counted with the reason;
2. a socket still open with that session (its client came back before its gateway
   saw it go) is evicted: here directly, elsewhere by an `evict` control request to the
   socket's subject; the session is then claimed (compare-and-set);
3. the connection gets the old sid and pid, is registered, its rooms are subscribed
   without it being a member, and the feed fetches what it missed
   (`feed.replay_for`, which refuses a replay the history cannot cover or the socket's
   bound cannot hold);
4. with no await from there on: the socket becomes a member of its rooms, the feed
   installs its live skip and hands back the replay packets, which the engine sends
   right after the CONNECT reply;
5. anything refused → a fresh session: a new sid and a new pid.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway.broker import Broker
from gateway.connect_identity import NOBODY, Admitted
from gateway.engine import Connection, OutboundPacket, event_packet
from gateway.engine.api import HandshakeRequest
from gateway.history.feed import NO_HISTORY, HistoryFeed
from gateway.history.feed import RecoveryRefused as Refusal
from gateway.history.transient import retrying
from gateway.logs import Throttled
from gateway.node import Gateway
from gateway.recovery.sessions import SessionStore, StoredSession, is_pid, new_pid, who_of
from shared.control import Evict, encode_request
from shared.errors import GatewayTimeout, SailcastError
from shared.history import HistoryRules, parse_offset
from shared.subjects import Subjects
from shared.users import is_reserved, user_of_room, user_room

log = logging.getLogger(__name__)

ADDON_FLAG: Final = "__sailcast_recovery"
ADDON_PID: Final = "__sailcast_pid"
ADDON_OFFSET: Final = "__sailcast_offset"
SESSION_EVENT: Final = "sailcast:session"
"""Sent to add-on sockets right after connect: {pid, sid, recovered}."""
EVICT_TIMEOUT_S: Final = 1.0
CLOSING_WAIT_S: Final = 2.0
"""How long a takeover waits for a just-closed local connection to be forgotten."""

OUTCOME_RECOVERED: Final = "recovered"
OUTCOME_FRESH: Final = "fresh"
REASON_OK: Final = "ok"
REASON_UNKNOWN: Final = "unknown"
REASON_EXPIRED: Final = "expired"
REASON_EPOCH: Final = "epoch"
REASON_NO_HISTORY: Final = "room_without_history"
REASON_ERROR: Final = "error"


class RecoveryRefused(Exception):
    """The session cannot be recovered whole; `reason` is the metric's label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claim:
    """What a connecting client says of its past: `pid`/`offset` as sent (None when
    absent); `capable`: it takes offsets (v4, or v3 with the add-on); `addon`: v3."""

    pid: str | None
    offset: tuple[str, int] | None
    capable: bool
    addon: bool


def read_claim(protocol: int, request: HandshakeRequest, auth: Any) -> tuple[Claim, Any]:
    """The claim, and the auth payload without the recovery keys (what the connect
    checks and workers see, as before)."""
    if protocol == 3:
        query = dict(urllib.parse.parse_qsl(request.query, keep_blank_values=True))
        if query.get(ADDON_FLAG) != "1":
            return Claim(None, None, capable=False, addon=False), auth
        pid = query.get(ADDON_PID) or None
        return Claim(pid, parse_offset(query.get(ADDON_OFFSET)), True, True), auth
    if not isinstance(auth, dict) or ("pid" not in auth and "offset" not in auth):
        return Claim(None, None, capable=True, addon=False), auth
    rest = {k: v for k, v in auth.items() if k not in ("pid", "offset")}
    pid = auth.get("pid")
    claim = Claim(
        pid if isinstance(pid, str) and pid else None, parse_offset(auth.get("offset")), True, False
    )
    return claim, rest or None


@dataclass(frozen=True, slots=True)
class Lookup:
    """Step 1's answer: the session to resume, or why a fresh one (None: nothing was
    claimed, a first connect: not counted)."""

    session: StoredSession | None
    reason: str | None


class Recovery:
    """Recovery for one gateway; owned by gateway.app."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        store: SessionStore,
        feed: HistoryFeed,
        rules: HistoryRules,
        broker: Broker,
        subjects: Subjects,
        gateway_id: str,
        replay_max_bytes: int,
        count: Any,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.feed = feed
        self.rules = rules
        self.broker = broker
        self.subjects = subjects
        self.gateway_id = gateway_id
        self.replay_max_bytes = replay_max_bytes
        self._count = count
        """`count(outcome, reason)`: recoveries_total."""
        self._warnings = Throttled(log)
        gateway.on_membership = self._membership

    # -- step 1 ----------------------------------------------------------------------
    async def look_up(self, claim: Claim) -> Lookup:
        if claim.pid is None:
            return Lookup(None, None)
        if not is_pid(claim.pid):
            return Lookup(None, REASON_UNKNOWN)
        if self.store.ended(claim.pid):  # said goodbye here a moment ago
            return Lookup(None, REASON_EXPIRED)
        pid = claim.pid
        try:
            session = await retrying(lambda: self.store.get(pid))
        except Exception as exc:  # NATS away, a JetStream error: no recovery this time
            self._warnings.warning("lookup", "session lookup failed: %s", exc)
            return Lookup(None, REASON_ERROR)
        if session is None:
            return Lookup(None, REASON_EXPIRED)
        epoch = self.feed.epoch
        if session.record.epoch != epoch or (claim.offset is not None and claim.offset[0] != epoch):
            return Lookup(None, REASON_EPOCH)
        sid = session.record.sid
        if any(self.rules.rule_for(r) is None for r in session.record.rooms if r != sid):
            return Lookup(None, REASON_NO_HISTORY)
        return Lookup(session, None)

    # -- steps 2 to 5 ----------------------------------------------------------------
    async def admit(
        self,
        conn: Connection,
        claim: Claim,
        lookup: Lookup,
        data: Any,
        admitted: Admitted = NOBODY,
    ) -> list[OutboundPacket]:
        """Register `conn`, recovered when it can be, fresh otherwise; the packets to
        send right after its CONNECT reply. TransportError: NATS refused the
        registration (nothing left registered). `admitted`: who it is (a recovered
        socket gets its user room back; its other rooms are the session's)."""
        reason = lookup.reason
        if lookup.session is not None:
            try:
                packets = await self._resume(conn, claim, lookup.session, data, admitted)
            except RecoveryRefused as exc:
                reason = exc.reason
            else:
                self._count(OUTCOME_RECOVERED, REASON_OK)
                log.debug("session recovered", extra={"sid": conn.sid})
                return packets
        if reason is not None:
            self._count(OUTCOME_FRESH, reason)
            log.debug("fresh session: %s", reason, extra={"sid": conn.sid})
        return await self._fresh(conn, claim, data, admitted)

    async def _fresh(
        self, conn: Connection, claim: Claim, data: Any, admitted: Admitted
    ) -> list[OutboundPacket]:
        pid = new_pid()
        conn.restore(conn.sid, pid)
        await self.gateway.socket_connected(conn, identity=admitted.identity, rooms=admitted.rooms)
        sid = conn.sid
        own = {sid: self.feed.join_position(sid)} if self.rules.rule_for(sid) else {}
        self.store.track(sid, pid, data=data, rooms=own, revision=None, who=who_of(admitted))
        self._membership(sid, admitted.joined_at_connect, ())  # joined before it was tracked
        return [self._session_event(sid, pid, recovered=False)] if claim.addon else []

    async def _resume(
        self,
        conn: Connection,
        claim: Claim,
        session: StoredSession,
        data: Any,
        admitted: Admitted,
    ) -> list[OutboundPacket]:
        record = session.record
        sid = record.sid
        who = who_of(admitted)
        try:
            await self._take_over(sid, record.gw, record.live)
            revision = await retrying(lambda: self.store.claim(session, data=data, who=who))
        except Exception as exc:  # NATS or JetStream failed us: a fresh session
            self._warnings.warning("claim", "session takeover failed: %s", exc)
            raise RecoveryRefused(REASON_ERROR) from exc
        if revision is None:
            raise RecoveryRefused(REASON_EXPIRED)
        fresh_sid = conn.sid
        conn.restore(sid, session.pid)
        try:
            await self.gateway.socket_connected(
                conn, join_own_room=False, identity=admitted.identity
            )
        except BaseException:
            conn.restore(fresh_sid, "")
            raise
        rooms = _restored_rooms(record.rooms, sid, admitted)
        offset = claim.offset[1] if claim.offset is not None else 0
        starts = {
            room: max(offset, pos)
            for room, pos in record.rooms.items()
            if self.rules.rule_for(room) is not None
        }
        try:
            await self.gateway.subscribe_rooms(rooms)
            replay = await self.feed.replay_for(
                starts, sid=sid, rooms_of_socket=[sid, *rooms], max_bytes=self.replay_max_bytes
            )
            if isinstance(replay, Refusal):
                raise RecoveryRefused(
                    REASON_NO_HISTORY if replay.reason == NO_HISTORY else replay.reason
                )
        except BaseException as exc:
            await self.gateway.socket_disconnected(sid)
            self.gateway.release_rooms(rooms)
            conn.restore(fresh_sid, "")
            if isinstance(exc, RecoveryRefused):
                raise
            if isinstance(exc, SailcastError | OSError | TimeoutError):
                self._warnings.warning("replay", "replay failed, fresh session: %s", exc)
                raise RecoveryRefused(REASON_ERROR) from exc
            raise
        # From here on no await: the socket joins its rooms, its replay is taken
        # with the live skip in place, and the engine sends both in this same step.
        self.store.track(sid, session.pid, data=data, rooms={}, revision=revision, who=who)
        self.gateway.join_restored(sid, [sid, *rooms])
        packets = list(self.feed.go_live(sid, replay))
        if claim.addon:
            packets.insert(0, self._session_event(sid, session.pid, recovered=True))
        return packets

    async def _take_over(self, sid: str, gw: str, live: bool) -> None:
        """Step 2: no connection but the new one may hold the sid."""
        local = self.gateway.connection(sid)
        if local is not None:
            if local.closed:  # its disconnect is being processed: let it finish
                loop = asyncio.get_running_loop()
                deadline = loop.time() + CLOSING_WAIT_S
                while self.gateway.connection(sid) is local and loop.time() < deadline:  # noqa: ASYNC110 - the engine's disconnect task is not ours to signal
                    await asyncio.sleep(0.01)
            if self.gateway.connection(sid) is local:
                await self.gateway.evict(sid)
            return
        if not live or gw == self.gateway_id:
            return
        try:
            await self.broker.request(
                self.subjects.socket(sid), encode_request(Evict()), timeout=EVICT_TIMEOUT_S
            )
        except GatewayTimeout:
            self._warnings.warning(
                "evict", "gateway %s did not answer the takeover in time", gw, extra={"sid": sid}
            )
        except SailcastError:
            pass  # nobody holds it (its gateway is gone): nothing to evict

    # -- session upkeep --------------------------------------------------------------
    def _membership(self, sid: str, joined: Collection[str], left: Collection[str]) -> None:
        if joined:
            rooms: dict[str, int] = {}
            for room in joined:
                if self.rules.rule_for(room) is not None:
                    rooms[room] = self.feed.join_position(room)
                elif room != sid and user_of_room(room) is None:
                    # no position: refuses recovery (room_without_history); a user room
                    # without history is not recorded: it follows from the identity
                    rooms[room] = 0
            self.store.joined(sid, rooms)
        if left:
            self.store.left(sid, left)

    def _session_event(self, sid: str, pid: str, *, recovered: bool) -> OutboundPacket:
        body = [SESSION_EVENT, {"pid": pid, "sid": sid, "recovered": recovered}, None]
        return event_packet(orjson.dumps(body))


def _restored_rooms(recorded: Collection[str], sid: str, admitted: Admitted) -> list[str]:
    """A recovered socket's rooms: the session's (its own-id room aside), with the user
    room of who it is now and no other reserved room (a user room recorded for history
    belongs to the identity the session had)."""
    uid = admitted.identity.user_id
    mine = user_room(uid) if uid is not None else None
    rooms = [r for r in recorded if r != sid and (r == mine or not is_reserved(r))]
    if mine is not None and mine not in rooms:
        rooms.append(mine)
    return rooms
