"""The history feed: one ordered pipeline for the messages of history rooms.

A history room's message reaches the gateway on its ordinary room subject, re-published
by the history stream with two headers (docs/recovery.md, "Positions and the live
path"): `Nats-Sequence` (its position S) and `Nats-Last-Sequence` (the previous position
on the same room, L; 0 for the room's first). Per room the feed keeps the last position
it handed on, last[R]:

- S <= last[R]: a duplicate (a repaired message arriving live after all): dropped, counted.
- L == last[R], or last[R] unknown (the room was just subscribed): delivered.
- L > last[R]: a gap (a core message lost between NATS and us). The feed pauses: every
  history message arriving from now on is held, in arrival order (core rooms keep
  flowing: they never come here); the missing ones (room R, positions in (last[R], L])
  are fetched with a batched Direct Get, delivered in order, then the held ones, each
  checked the same way. A fetch is retried; what cannot be fetched is counted as lost
  and logged, and the chain is taken up again after it. The hold is bounded: past it the
  newest message is dropped (counted), and its room's next message shows the gap again.

So every socket gets each room's history messages once, in increasing position order,
and across rooms too except around a loss (seen only when the lost message's room
speaks again, or after a NATS reconnect: `catch_up`); `high_water` is the highest
position handed on. Recovery (gateway.recovery) reads
from here: `join_position(room)` when a socket joins, `replay_for(starts, …)` to fetch
what a returning socket missed, and `go_live(sid, replay)`, which installs a per-socket
skip (live messages at or below the replay's end are not sent to that socket again) and
returns the replay's packets, each with its offset.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Protocol

from gateway.engine import event_packet
from gateway.engine.api import OutboundPacket
from gateway.fanout import offset_suffix, with_suffix
from gateway.history.direct_get import Page
from gateway.history.transient import ELECTION_BUDGET_S, retrying
from gateway.logs import Throttled
from gateway.metrics import GatewayMetrics
from shared.envelope import decode_data
from shared.errors import MalformedEnvelope, SailcastError
from shared.history import HistoryRules, format_offset
from shared.subjects import Subjects

log = logging.getLogger(__name__)

HOLD_MAX_MESSAGES: Final = 10_000
"""History messages held while a gap is repaired; past it the newest is dropped."""
HOLD_MAX_BYTES: Final = 32 * 1024 * 1024
FETCH_RETRY_DELAYS_S: Final = (0.05, 0.25, 1.0)
"""Waits before the 2nd, 3rd and 4th attempt of a repair fetch."""
FETCH_PAGE_BYTES: Final = 1024 * 1024
"""max_bytes of one batched Direct Get."""
EPOCH_CHECK_S: Final = 1.0
"""At most one stream re-read per this many seconds when positions go back."""
REPLAY_PASSES_MAX: Final = 8
"""Catch-up passes of a replay before it gives up (`history_unavailable`)."""
RECENT_PER_ROOM: Final = 32
"""Messages of each room the live path handed on last, kept so that a replay can be
closed against the live path in memory (`_close_from_recent`) instead of by one more
fetch that busy rooms may outrun."""
LIVE_CATCH_UP_S: Final = 1.0
"""How long a replay waits for the live path to hand on what its fetch already read."""

# recovery refusal reasons (docs/recovery.md; also metric labels)
HISTORY_TRIMMED: Final = "history_trimmed"
HISTORY_EXCEEDED: Final = "history_exceeded"
REPLAY_TOO_LARGE: Final = "replay_too_large"
NO_HISTORY: Final = "no_history"
HISTORY_UNAVAILABLE: Final = "history_unavailable"


class StreamLike(Protocol):
    """What the feed reads of the history stream (gateway.history.stream.HistoryStream)."""

    @property
    def name(self) -> str: ...

    @property
    def epoch(self) -> str: ...

    @property
    def rules(self) -> HistoryRules: ...

    @property
    def max_msgs_per_subject(self) -> int: ...

    async def first_seq(self) -> int: ...

    async def refresh(self) -> bool:
        """Read the stream again; True when its epoch changed (it was recreated)."""


class StoredReader(Protocol):
    """Reads stored messages (gateway.history.direct_get.DirectGet; a fake in tests)."""

    async def after(self, subject: str, seq: int, *, batch: int, max_bytes: int) -> Page: ...

    async def last_seq(self) -> int:
        """The stream's last position now (0: empty)."""


Deliver = Callable[[str, bytes, int], None]
"""(room, envelope, position): hand one history message to the room's local members."""


@dataclass(frozen=True, slots=True)
class RecoveryRefused:
    """Why a socket's missed messages cannot be replayed in full (recovery is never
    partial: the socket gets a fresh session)."""

    reason: str


@dataclass(slots=True)
class Replay:
    """What a recovering socket missed, in position order, ready for `go_live`."""

    sid: str
    upto: int
    """Every message of the socket's rooms at or below this position is in the replay or
    was not for it; live messages at or below it are skipped for this socket."""
    items: list[tuple[int, bytes]] = field(default_factory=list)
    """(position, Socket.IO args JSON) in position order."""
    size: int = 0
    """Bytes of args in `items`."""


class _Held:
    __slots__ = ("data", "prev", "room", "seq")

    def __init__(self, room: str, data: bytes, seq: int, prev: int) -> None:
        self.room = room
        self.data = data
        self.seq = seq
        self.prev = prev


def with_offset(args: bytes, offset: str) -> bytes:
    """`["ev",…]` → `["ev",…,"<offset>"]`, as the live path's offset variant."""
    return with_suffix(args, offset_suffix(offset))


class HistoryFeed:
    def __init__(
        self,
        stream: StreamLike,
        reader: StoredReader,
        subjects: Subjects,
        deliver: Deliver,
        metrics: GatewayMetrics,
        *,
        hold_max_messages: int = HOLD_MAX_MESSAGES,
        hold_max_bytes: int = HOLD_MAX_BYTES,
        retry_delays_s: tuple[float, ...] = FETCH_RETRY_DELAYS_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._stream = stream
        self._reader = reader
        self._subjects = subjects
        self._deliver = deliver
        self._metrics = metrics
        self.hold_max_messages = hold_max_messages
        self.hold_max_bytes = hold_max_bytes
        self.retry_delays_s = retry_delays_s
        self._wall = wall_clock
        self.retry_budget_s = ELECTION_BUDGET_S
        """How long a recovery read is retried over a JetStream leader election."""
        self._epoch = stream.epoch
        self._last: dict[str, int] = {}
        self.high_water = 0
        """The highest position handed on for delivery (or the stream's end at start)."""
        self._held: collections.deque[_Held] = collections.deque()
        self._held_bytes = 0
        self._paused = False
        self._repairing: asyncio.Task[None] | None = None
        self._current: _Held | None = None
        """The message whose gap is being repaired (it counts as held)."""
        self._skip: dict[str, int] = {}
        self._skip_max = 0
        self._recent: dict[str, collections.deque[tuple[int, int | None, bytes, float]]] = {}
        """Per room: (position, the room's position before it, envelope, handed on at)."""
        self._epoch_check: asyncio.Task[None] | None = None
        self._epoch_checked_at = -EPOCH_CHECK_S
        self._warnings = Throttled(log)

    # -- recovery API ----------------------------------------------------------------
    @property
    def epoch(self) -> str:
        """The stream instance's id: the first half of every offset."""
        return self._stream.epoch

    def join_position(self, room: str) -> int:
        """Where a socket joining `room` now starts: it is owed the room's messages
        after this position (the last one handed on for the room, or, for a room with
        nothing seen yet, the highest position seen at all)."""
        last = self._last.get(room)
        return self.high_water if last is None else last

    def offset(self, seq: int) -> str:
        return format_offset(self._stream.epoch, seq)

    async def replay_for(
        self,
        starts: Mapping[str, int],
        *,
        sid: str,
        rooms_of_socket: Collection[str],
        max_bytes: int,
    ) -> Replay | RecoveryRefused:
        """The messages of each room after its start, merged in position order, up to a
        position T at or beyond every room's last[R] at return (so nothing the live path
        handed on while we fetched is missed; call `go_live` without awaiting anything in
        between). `rooms_of_socket` are the rooms the socket will be in (the "first room"
        rule of multi-room messages); `max_bytes` bounds the replay (the socket's
        outbound bound). Refusals: no_history, history_trimmed, history_exceeded,
        replay_too_large, history_unavailable."""
        rules = self._stream.rules
        picked: dict[str, list[tuple[int, bytes, float]]] = {}
        cursors: dict[str, int] = {}
        for room, start in starts.items():
            if rules.rule_for(room) is None:
                return RecoveryRefused(NO_HISTORY)
            picked[room] = []
            cursors[room] = start
        try:
            first = await retrying(self._stream.first_seq, budget_s=self.retry_budget_s)
        except (SailcastError, OSError) as exc:
            log.warning("recovery: stream state unavailable: %s", exc)
            return RecoveryRefused(HISTORY_UNAVAILABLE)
        for start in starts.values():
            if start + 1 < first:
                return RecoveryRefused(HISTORY_TRIMMED)
        upto = max(starts.values(), default=0)
        size = 0
        bound: int | None = None  # None: first pass, everything after each cursor
        for _ in range(REPLAY_PASSES_MAX):
            for room in starts:
                got = await self._fetch_after(room, cursors[room], bound, max_bytes)
                if isinstance(got, RecoveryRefused):
                    return got
                for seq, data, stored_at in got:
                    picked[room].append((seq, data, stored_at))
                    cursors[room] = seq
                    size += len(data)
                refused = self._check(room, picked[room], size, max_bytes)
                if refused is not None:
                    return refused
                if picked[room]:
                    upto = max(upto, picked[room][-1][0])
            live = max((self._last.get(r, 0) for r in starts), default=0)
            if bound is not None and live <= bound:
                return self._build(sid, bound, picked, rooms_of_socket)
            # The live path may have handed on more of these rooms meanwhile, and
            # under load (every socket of a lost gateway recovering at once) another
            # fetch can be outrun again and again: close the replay against what the
            # live path handed on, in memory, when it still holds it.
            deadline = time.monotonic() + LIVE_CATCH_UP_S
            # a bounded poll on a rare path: an Event set per message would cost them all
            while self.high_water < upto and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)  # it hands on what the fetch read shortly
            if self.high_water >= upto:
                closed = self._close_from_recent(
                    sid, cursors, picked, size, max_bytes, rooms_of_socket
                )
                if closed is not None:
                    return closed
            # every room is complete up to `bound` after the next pass
            bound = max(upto, live)
            upto = bound
        log.warning("recovery: rooms too busy to catch up in %d passes", REPLAY_PASSES_MAX)
        return RecoveryRefused(HISTORY_UNAVAILABLE)

    def _close_from_recent(
        self,
        sid: str,
        cursors: dict[str, int],
        picked: dict[str, list[tuple[int, bytes, float]]],
        size: int,
        max_bytes: int,
        rooms_of_socket: Collection[str],
    ) -> Replay | RecoveryRefused | None:
        """Complete every room up to the high-water mark T from the messages the live
        path handed on after the fetch (synchronous: nothing is handed on in between).

        The live path hands on in position order, so every message at or below T of a
        subscribed room was handed on, unless it came before this gateway followed the
        room (then the fetch, made after the subscription, read it). A room is complete
        up to T when the recent messages after its cursor reach back to it unbroken (the
        first one's predecessor in its room is at or below the cursor). None when a
        room's recent messages do not reach back: fetch again."""
        extra: dict[str, list[tuple[int, bytes, float]]] = {}
        for room, cursor in cursors.items():
            last = self._last.get(room)
            if last is None or last <= cursor:
                continue
            got = self._recent_after(room, cursor)
            if got is None:
                return None
            extra[room] = got
        for room, got in extra.items():
            picked[room].extend(got)
            cursors[room] = got[-1][0]
            size += sum(len(d) for _, d, _ in got)
            refused = self._check(room, picked[room], size, max_bytes)
            if refused is not None:
                return refused
        return self._build(sid, self.high_water, picked, rooms_of_socket)

    def _recent_after(self, room: str, cursor: int) -> list[tuple[int, bytes, float]] | None:
        recent = self._recent.get(room)
        if not recent:
            return None
        for i, (seq, before, _, _) in enumerate(recent):
            if seq > cursor:
                if before is None or before > cursor:
                    return None  # something of the room between the cursor and it
                return [(s, d, t) for s, _, d, t in list(recent)[i:]]
        return None

    def go_live(self, sid: str, replay: Replay) -> list[OutboundPacket]:
        """The socket is a member of its rooms now: from here on live messages at or
        below `replay.upto` are not sent to it (it has them). Returns the replay's
        packets, each with its offset as last argument. Synchronous on purpose."""
        self._skip[sid] = replay.upto
        self._skip_max = max(self._skip_max, replay.upto)
        self._metrics.replayed_messages.inc(len(replay.items))
        return [event_packet(with_offset(args, self.offset(seq))) for seq, args in replay.items]

    # -- the live path ---------------------------------------------------------------
    def offer(self, room: str, data: bytes, seq: int, prev: int) -> None:
        """One history message from the broker (inline in its reader)."""
        item = _Held(room, data, seq, prev)
        if self._paused:
            self._hold(item)
            return
        if self._step(item):
            return
        self._paused = True  # a gap: this message waits first in the hold
        self._held.append(item)
        self._held_bytes += len(data)
        self._repairing = asyncio.ensure_future(self._repair_loop())

    def unskipped(self, sids: Collection[str], seq: int) -> Collection[str]:
        """Recipients of the live message at `seq`, without the sockets that got it in
        their replay."""
        if not self._skip:
            return sids
        if seq > self._skip_max:  # every skip is behind us
            self._skip.clear()
            return sids
        skip = self._skip
        return [s for s in sids if skip.get(s, 0) < seq]

    async def catch_up(self) -> int:
        """After the NATS connection came back: a quiet room's lost messages would show
        only with its next message, so read each followed room's messages after its
        last position and hand on what we missed (through the pipeline, in order).
        Returns how many were missed."""
        missed = 0
        cap = self._stream.max_msgs_per_subject
        for room, last in list(self._last.items()):
            try:
                page, intact = await self._after_checked(self._subjects.history(room), last, cap)
            except (SailcastError, OSError) as exc:
                log.warning("history catch-up after a reconnect stopped: %s", exc)
                break
            now = self._last.get(room)
            if now is None:
                continue  # let go of meanwhile
            if not intact and now == last:  # (the live path checks its own chain)
                self._trimmed(room, last, page.messages[0].seq)
            prev = last
            fresh = [m for m in page.messages if m.seq > now]
            if fresh:
                self._metrics.history_gaps.inc()
                self._metrics.history_repaired.inc(len(fresh))
                missed += len(fresh)
            for m in page.messages:
                if m.seq > now:  # as if it arrived now, with its place in the room's chain
                    self.offer(room, m.data, m.seq, prev)
                prev = m.seq
        if missed:
            log.info("history: %d messages missed while NATS was away, delivered", missed)
        return missed

    def forget_room(self, room: str) -> None:
        """The room's subscription is gone: its next message starts a new chain."""
        self._last.pop(room, None)
        self._recent.pop(room, None)

    def forget_socket(self, sid: str) -> None:
        self._skip.pop(sid, None)

    async def start(self) -> None:
        """Take the stream's current end as the first high-water mark, so a socket
        joining before any history message arrived starts at the present."""
        try:
            self.high_water = max(self.high_water, await self._reader.last_seq())
        except (SailcastError, OSError) as exc:
            log.warning("history stream state unavailable at start: %s", exc)

    async def stop(self) -> None:
        for task in (self._repairing, self._epoch_check):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    @property
    def holding(self) -> int:
        """Messages waiting for a repair now (the one that revealed it included)."""
        return len(self._held) + (self._current is not None)

    # -- internals -------------------------------------------------------------------
    def _step(self, item: _Held) -> bool:
        """Deliver or drop `item`; False when it reveals a gap (nothing done yet)."""
        room, seq = item.room, item.seq
        last = self._last.get(room)
        if last is not None:
            if seq <= last:
                if self._stream.epoch != self._epoch:  # a recreated stream starts over
                    self._reset()
                    return self._step(item)
                self._metrics.history_duplicates.inc()
                self._check_epoch_soon()
                return True
            if item.prev > last:
                return False
        self._hand_on(room, item.data, seq)
        return True

    def _hand_on(self, room: str, data: bytes, seq: int) -> None:
        recent = self._recent.get(room)
        if recent is None:
            recent = self._recent[room] = collections.deque(maxlen=RECENT_PER_ROOM)
        recent.append((seq, self._last.get(room), data, self._wall()))
        self._last[room] = seq
        if seq > self.high_water:
            self.high_water = seq
        self._deliver(room, data, seq)

    def _hold(self, item: _Held) -> None:
        size = len(item.data)
        if self.holding >= self.hold_max_messages or (
            self._held_bytes + size > self.hold_max_bytes
        ):
            self._metrics.drops.labels("history_hold_full").inc()
            self._warnings.warning(
                "history_hold_full", "history hold full while repairing a gap: dropped a message"
            )
            return
        self._held.append(item)
        self._held_bytes += size

    async def _repair_loop(self) -> None:
        """Repair the gap the first held message revealed, then work through what was
        held meanwhile (which may reveal more gaps), then resume the live path."""
        try:
            held = self._held
            while held:
                nxt = held.popleft()
                self._held_bytes -= len(nxt.data)
                if not self._step(nxt):
                    self._current = nxt
                    await self._repair(nxt)
                    self._current = None
        except asyncio.CancelledError:
            raise
        except Exception:  # never leave the pipeline paused
            log.exception("history gap repair failed")
            while self._held:
                nxt = self._held.popleft()
                self._hand_on(nxt.room, nxt.data, nxt.seq)
        finally:
            self._current = None
            self._held_bytes = 0
            self._paused = False
            self._repairing = None

    async def _repair(self, item: _Held) -> None:
        """Fetch and hand on the room's messages in (last[R], item.prev], then `item`."""
        room = item.room
        last = self._last.get(room, 0)
        self._metrics.history_gaps.inc()
        subject = self._subjects.history(room)
        wanted = item.prev
        error: str | None = None
        checked = trimmed = False
        for attempt in range(len(self.retry_delays_s) + 1):
            if attempt:
                await asyncio.sleep(self.retry_delays_s[attempt - 1])
            try:
                while last < wanted:
                    batch = max(1, min(wanted - last, self._stream.max_msgs_per_subject))
                    if checked:
                        page = await self._reader.after(
                            subject, last, batch=batch, max_bytes=FETCH_PAGE_BYTES
                        )
                    else:
                        page, intact = await self._after_checked(subject, last, batch)
                        checked = True
                        if not intact and page.messages[0].seq <= wanted:
                            self._trimmed(room, last, page.messages[0].seq)
                            trimmed = True
                    got = [m for m in page.messages if last < m.seq <= wanted]
                    for m in got:
                        self._hand_on(room, m.data, m.seq)
                        self._metrics.history_repaired.inc()
                        last = m.seq
                    if not got or page.pending == 0 or page.messages[-1].seq >= wanted:
                        break
                error = None
            except (SailcastError, OSError) as exc:
                error = str(exc)
                continue
            if last >= wanted or attempt:  # absent twice: trimmed, not a replica's lag
                break
        if last < wanted:
            reason = "unavailable" if error is not None else "trimmed"
            if not (trimmed and reason == "trimmed"):  # counted once per gap
                self._metrics.history_lost.labels(reason).inc()
            log.warning(
                "history gap not repaired (%s): room messages after position %d up to %d "
                "are lost for this gateway's sockets%s",
                reason,
                last,
                wanted,
                f" ({error})" if error else "",
            )
            self._last[room] = wanted
        self._step(item)

    async def _after_checked(self, subject: str, last: int, batch: int) -> tuple[Page, bool]:
        """The room's stored messages after `last`, and whether nothing between `last` and
        them can have been trimmed unseen: False when the stream no longer holds `last`
        itself but holds later ones. It trims each room oldest first and never says how
        many it trimmed, so only `last` still being there proves the chain complete."""
        if last <= 0:  # the room's chain starts here: nothing before to lose
            return await self._reader.after(
                subject, 0, batch=batch, max_bytes=FETCH_PAGE_BYTES
            ), True
        page = await self._reader.after(
            subject, last - 1, batch=batch + 1, max_bytes=FETCH_PAGE_BYTES
        )
        msgs = page.messages
        if not msgs or msgs[0].seq != last:
            return page, not msgs
        if len(msgs) == 1 and page.pending:  # `last` alone filled the page's bytes
            page = await self._reader.after(subject, last, batch=batch, max_bytes=FETCH_PAGE_BYTES)
            return page, True
        return Page(msgs[1:], page.pending), True

    def _trimmed(self, room: str, last: int, oldest: int) -> None:
        """Counted as lost: the messages of the room between these positions, if any,
        left the stream before this gateway read them (docs/recovery.md)."""
        self._metrics.history_lost.labels("trimmed").inc()
        self._warnings.warning(
            "trimmed",
            "history: the stream no longer holds position %d of a room; its messages before "
            "position %d may be lost for this gateway's sockets (trimmed by the room's limits)",
            last,
            oldest,
            extra={"room": room},
        )

    async def _fetch_after(
        self, room: str, cursor: int, bound: int | None, max_bytes: int
    ) -> list[tuple[int, bytes, float]] | RecoveryRefused:
        """The room's stored messages after `cursor` (up to `bound` if given)."""
        subject = self._subjects.history(room)
        cap = self._stream.max_msgs_per_subject
        out: list[tuple[int, bytes, float]] = []
        while True:
            try:
                page = await retrying(
                    partial(
                        self._reader.after,
                        subject,
                        cursor,
                        batch=cap + 1,
                        max_bytes=min(max_bytes + 1, FETCH_PAGE_BYTES),
                    ),
                    budget_s=self.retry_budget_s,
                )
            except (SailcastError, OSError) as exc:
                log.warning("recovery: history of a room unavailable: %s", exc)
                return RecoveryRefused(HISTORY_UNAVAILABLE)
            for m in page.messages:
                if bound is not None and m.seq > bound:
                    return out
                out.append((m.seq, m.data, m.time_s))
                cursor = m.seq
            if not page.messages or page.pending == 0 or len(out) > cap:
                return out

    def _check(
        self, room: str, got: list[tuple[int, bytes, float]], size: int, max_bytes: int
    ) -> RecoveryRefused | None:
        rule = self._stream.rules.rule_for(room)
        assert rule is not None  # checked by replay_for
        if len(got) >= self._stream.max_msgs_per_subject:
            return RecoveryRefused(HISTORY_TRIMMED)  # older ones may have been pushed out
        if len(got) > rule.max_msgs or (got and self._wall() - got[0][2] > rule.max_age_s):
            return RecoveryRefused(HISTORY_EXCEEDED)
        if size > max_bytes:
            return RecoveryRefused(REPLAY_TOO_LARGE)
        return None

    def _build(
        self,
        sid: str,
        upto: int,
        picked: Mapping[str, list[tuple[int, bytes, float]]],
        rooms_of_socket: Collection[str],
    ) -> Replay:
        merged = sorted(
            ((seq, room, data) for room, items in picked.items() for seq, data, _ in items),
        )
        replay = Replay(sid, upto)
        for seq, room, data in merged:
            try:
                msg = decode_data(data)
            except MalformedEnvelope:
                self._metrics.drops.labels("malformed").inc()
                continue
            if sid in msg.omit:
                continue
            if len(msg.rooms) > 1 and room in msg.rooms:
                earlier = msg.rooms[: msg.rooms.index(room)]
                if any(r in rooms_of_socket for r in earlier):
                    continue  # it gets this message through the earlier room's copy
            replay.items.append((seq, msg.args))
            replay.size += len(msg.args)
        return replay

    def _check_epoch_soon(self) -> None:
        """Positions going back may mean a recreated stream, whose new epoch the
        periodic refresh would only see seconds later: ask now (at most once a second;
        duplicates are rare, so this costs nothing in steady state)."""
        now = time.monotonic()
        if self._epoch_check is not None or now - self._epoch_checked_at < EPOCH_CHECK_S:
            return
        self._epoch_checked_at = now
        self._epoch_check = asyncio.ensure_future(self._check_epoch())

    async def _check_epoch(self) -> None:
        try:
            await self._stream.refresh()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("history stream not re-read after positions went back: %s", exc)
        finally:
            self._epoch_check = None
        if self._stream.epoch != self._epoch:
            self._reset()

    def _reset(self) -> None:
        log.warning(
            "history stream epoch changed (%s → %s): positions start over",
            self._epoch,
            self._stream.epoch,
        )
        self._epoch = self._stream.epoch
        self._last.clear()
        self._recent.clear()
        self._skip.clear()
        self._skip_max = 0
        self.high_water = 0


__all__ = [
    "HISTORY_EXCEEDED",
    "HISTORY_TRIMMED",
    "HISTORY_UNAVAILABLE",
    "NO_HISTORY",
    "REPLAY_TOO_LARGE",
    "HistoryFeed",
    "RecoveryRefused",
    "Replay",
    "StoredReader",
    "StreamLike",
    "with_offset",
]
