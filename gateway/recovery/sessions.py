"""Recoverable sessions in a NATS KV bucket, so a socket outlives its gateway.

One key per session: its pid (random, unguessable, URL-safe), the value a JSON record
(`SessionRecord`). The bucket's TTL is the recovery window: a record not rewritten
within it expires, which is how a session ends. A gateway writes the record of each of
its sockets at connect, on membership change (coalesced, `COALESCE_S`), on disconnect
(`live: false`), and rewrites it every window/3 while the socket lives, or the TTL would
end a long-lived socket's session.

Every write is a compare-and-set on the revision this gateway last wrote: a gateway
that lost the socket to a takeover (its client came back elsewhere) fails its next
write, counts it (`session_writes_total{result="conflict"}`) and stops writing.

The work per tick is bounded (`MAX_WRITES_PER_TICK`): a burst of joins or a mass
reconnect spreads its writes over the next ticks instead of flooding NATS.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from gateway.connect_identity import Admitted
from gateway.identities import Identity
from gateway.logs import Throttled
from gateway.settings import HistorySettings

log = logging.getLogger(__name__)

RECORD_VERSION: Final = 1
COALESCE_S: Final = 0.1
"""Membership changes of one socket within this long become one write."""
MAX_WRITES_PER_TICK: Final = 256
"""Writes in flight at most (started per tick, and at once for a disconnect); the rest
wait for the next ticks, in order."""
RETRY_AFTER_ERROR_S: Final = 1.0
"""A write that failed for a transport reason is tried again this much later."""
CLAIM_ATTEMPTS: Final = 3
STOP_WRITES_S: Final = 2.0
"""At stop, how long pending writes (a drain's disconnects) may take."""
PID_BYTES: Final = 18
"""24 URL-safe characters: unguessable, and a valid KV key ([A-Za-z0-9_-])."""

RESULT_OK: Final = "ok"
RESULT_CONFLICT: Final = "conflict"
RESULT_ERROR: Final = "error"


def new_pid() -> str:
    return secrets.token_urlsafe(PID_BYTES)


def is_pid(value: object) -> bool:
    """Whether `value` can be a pid we made (a client sends anything)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)
    )


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What survives the gateway: `{"v":1,"sid","rooms":{room: join_pos},"data",
    "epoch","gw","live","at"}`. `rooms` are the socket's history rooms with the
    position it joined them at (its own-id room only when that room keeps history);
    `data` is what the before-connect check granted; `who` (only for a socket with
    one) its identity, `{"user", "info"}`, given back when the check is not rerun."""

    sid: str
    rooms: Mapping[str, int]
    data: Any
    epoch: str
    gw: str
    live: bool
    at: float
    who: Mapping[str, Any] | None = None

    def encode(self) -> bytes:
        out = {
            "v": RECORD_VERSION,
            "sid": self.sid,
            "rooms": dict(self.rooms),
            "data": self.data,
            "epoch": self.epoch,
            "gw": self.gw,
            "live": self.live,
            "at": self.at,
        }
        if self.who is not None:
            out["who"] = dict(self.who)
        return orjson.dumps(out)

    @classmethod
    def decode(cls, raw: bytes) -> SessionRecord:
        """ValueError for anything this code did not write."""
        obj = orjson.loads(raw)
        if not isinstance(obj, dict) or obj.get("v") != RECORD_VERSION:
            raise ValueError("not a v1 session record")
        sid, rooms, epoch, gw = obj.get("sid"), obj.get("rooms"), obj.get("epoch"), obj.get("gw")
        if not (isinstance(sid, str) and sid and isinstance(epoch, str) and isinstance(gw, str)):
            raise ValueError("a session record names its sid, epoch and gateway")
        if not isinstance(rooms, dict) or not all(
            isinstance(r, str) and type(p) is int for r, p in rooms.items()
        ):
            raise ValueError("rooms must map room names to positions")
        at = obj.get("at")
        return cls(
            sid,
            rooms,
            obj.get("data"),
            epoch,
            gw,
            obj.get("live") is True,
            float(at) if isinstance(at, int | float) else 0.0,
            who if isinstance(who := obj.get("who"), dict) else None,
        )


@dataclass(frozen=True, slots=True)
class StoredSession:
    pid: str
    record: SessionRecord
    revision: int

    @property
    def who(self) -> Admitted | None:
        """The identity it was granted (None: a record written without one)."""
        who = self.record.who
        if who is None:
            return None
        user, info = who.get("user"), who.get("info")
        return Admitted(
            Identity(
                user if isinstance(user, str) else None, info if isinstance(info, dict) else None
            )
        )


def who_of(admitted: Admitted) -> dict[str, Any] | None:
    """A session record's `who` (None for an anonymous socket)."""
    who = admitted.identity
    if who.user_id is None and who.info is None:
        return None
    return {"user": who.user_id, "info": who.info}


@dataclass(slots=True)
class _Tracked:
    """One local socket's session as this gateway last knows it."""

    pid: str
    data: Any
    rooms: dict[str, int]
    revision: int | None
    """What our last write returned; None: not written yet (created, not updated)."""
    who: dict[str, Any] | None = None
    live: bool = True
    ended: bool = False
    """Closed for good (the client or the server said goodbye): deleted, not kept."""
    dirty_at: float | None = None
    """When it first changed since its last write (None: clean)."""
    writing: bool = False
    refresh_at: float = 0.0
    retry_at: float = 0.0


async def open_bucket(js: JetStreamContext, bucket: str, settings: HistorySettings) -> KeyValue:
    """The sessions bucket, created when missing (idempotent: gateways starting at
    once create the same config); one made with another window or replica count is
    updated to this gateway's (the last gateway started wins, as for the stream)."""
    storage = StorageType.MEMORY if settings.history_storage == "memory" else StorageType.FILE
    config = KeyValueConfig(
        bucket=bucket,
        history=1,
        ttl=settings.recovery_window_s,
        replicas=settings.history_replicas,
        storage=storage,
    )
    try:
        return await js.create_key_value(config)
    except BadRequestError:
        pass  # made before with other settings (another window, more replicas)
    name = f"KV_{bucket}"
    current = (await js.stream_info(name)).config
    if current.max_age != settings.recovery_window_s or (
        current.num_replicas != settings.history_replicas
    ):
        current.max_age = settings.recovery_window_s
        current.num_replicas = settings.history_replicas
        if current.duplicate_window and current.duplicate_window > current.max_age:
            current.duplicate_window = current.max_age  # JetStream's own rule
        try:
            await js.update_stream(current)
            log.info("sessions bucket %s updated: window %ss", bucket, current.max_age)
        except APIError as exc:  # e.g. more replicas than servers
            log.warning("sessions bucket %s kept as it is: %s", bucket, exc)
    return await js.key_value(bucket)


class SessionStore:
    """The sessions of this gateway's sockets, kept in step with the KV bucket."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        gateway_id: str,
        window_s: float,
        epoch: Callable[[], str],
        on_write: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._kv = kv
        self._gw = gateway_id
        self._refresh_s = window_s / 3
        self._epoch = epoch
        self._on_write = on_write
        self._clock = clock
        self._wall = wall
        self._tracked: dict[str, _Tracked] = {}
        self._dirty: dict[str, None] = {}
        """Sids waiting for a write, oldest change first (an ordered set)."""
        self._refresh: list[tuple[float, str]] = []
        self._ending: set[str] = set()
        """Pids of sessions ended here whose record is not deleted yet."""
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._warnings = Throttled(log)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="session-writes")

    async def stop(self) -> None:
        """Write what is pending once more (a drain's disconnects), then stop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WRITES_S
        while (self._dirty or self._writes) and loop.time() < deadline:
            self.tick(flush=True)
            if self._writes:
                await asyncio.wait(set(self._writes), timeout=COALESCE_S)
            else:
                await asyncio.sleep(COALESCE_S)  # only retries wait: their turn comes

    # -- reading ---------------------------------------------------------------------
    async def get(self, pid: str) -> StoredSession | None:
        """The session of `pid`, or None when there is none (expired, never made, or
        not a record of ours). Transport errors propagate."""
        try:
            entry = await self._kv.get(pid)
        except KeyNotFoundError:  # KeyDeletedError is one too
            return None
        if entry.value is None or entry.revision is None:
            return None
        try:
            record = SessionRecord.decode(entry.value)
        except ValueError as exc:
            self._warnings.warning("record", "ignored a malformed session record: %s", exc)
            return None
        return StoredSession(pid, record, entry.revision)

    async def claim(
        self, session: StoredSession, *, data: Any, who: dict[str, Any] | None = None
    ) -> int | None:
        """Make the session ours (a recovery): written live, here, on the revision read,
        re-read and retried when the gateway we took it from wrote in between. The
        revision now ours, or None when the session vanished meanwhile."""
        current: StoredSession | None = session
        for _ in range(CLAIM_ATTEMPTS):
            if current is None:
                return None
            record = SessionRecord(
                current.record.sid,
                current.record.rooms,
                data,
                self._epoch(),
                self._gw,
                True,
                self._wall(),
                who,
            )
            try:
                revision = await self._kv.update(
                    session.pid, record.encode(), last=current.revision
                )
            except KeyWrongLastSequenceError:
                self._on_write(RESULT_CONFLICT)
                current = await self.get(session.pid)
                continue
            self._on_write(RESULT_OK)
            return revision
        return None

    # -- the local sockets -----------------------------------------------------------
    def track(
        self,
        sid: str,
        pid: str,
        *,
        data: Any,
        rooms: Mapping[str, int],
        revision: int | None,
        who: dict[str, Any] | None = None,
    ) -> None:
        """A socket connected here with this session (fresh: `revision` None)."""
        self._tracked[sid] = _Tracked(pid, data, dict(rooms), revision, who)
        self._mark(sid)

    def joined(self, sid: str, rooms: Mapping[str, int]) -> None:
        t = self._tracked.get(sid)
        if t is not None and t.live:
            t.rooms.update(rooms)
            self._mark(sid)

    def left(self, sid: str, rooms: Iterable[str]) -> None:
        t = self._tracked.get(sid)
        if t is not None and t.live:
            for room in rooms:
                t.rooms.pop(room, None)
            self._mark(sid)

    def closed(self, sid: str, *, recoverable: bool = True) -> None:
        """The socket went: its record says so (live: false) and stays until the TTL;
        not `recoverable` (a goodbye, as Socket.IO 4 counts it), the record is deleted."""
        t = self._tracked.get(sid)
        if t is not None and t.live:
            t.live = False
            t.ended = not recoverable
            if t.ended:
                self._ending.add(t.pid)
            self._mark(sid)
            if not t.writing and len(self._writes) < MAX_WRITES_PER_TICK:
                self._dirty.pop(sid, None)  # at once: the client may be back in a moment
                self._start(sid, t)

    def ended(self, pid: str) -> bool:
        """Whether a local socket with this pid said goodbye (its record may not be
        deleted yet)."""
        return pid in self._ending

    def forget(self, sid: str) -> None:
        """Taken over elsewhere: nothing more is written for it."""
        t = self._tracked.pop(sid, None)
        if t is not None:
            self._ending.discard(t.pid)
        self._dirty.pop(sid, None)

    def pid_of(self, sid: str) -> str | None:
        t = self._tracked.get(sid)
        return t.pid if t is not None else None

    def __len__(self) -> int:
        return len(self._tracked)

    def _mark(self, sid: str) -> None:
        t = self._tracked[sid]
        if t.dirty_at is None:
            t.dirty_at = self._clock()
            self._dirty[sid] = None

    # -- writing ---------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(COALESCE_S)
            try:
                self.tick()
            except Exception:
                log.exception("session write tick failed")

    def tick(self, *, flush: bool = False) -> int:
        """Start the writes that are due (at most MAX_WRITES_PER_TICK); how many."""
        now = self._clock()
        started = 0
        refresh = self._refresh
        popped = 0
        while refresh and refresh[0][0] <= now and popped < 4 * MAX_WRITES_PER_TICK:
            popped += 1
            _, sid = heapq.heappop(refresh)
            t = self._tracked.get(sid)
            if t is not None and t.live and t.refresh_at <= now:
                self._mark(sid)
        budget = MAX_WRITES_PER_TICK - len(self._writes)  # in flight count too
        for sid in list(self._dirty):
            if started >= budget:
                break
            t = self._tracked.get(sid)
            if t is None:
                del self._dirty[sid]
                continue
            if t.writing or t.retry_at > now:
                continue
            if t.dirty_at is not None and not flush and now - t.dirty_at < COALESCE_S:
                break  # oldest change first: the rest changed later still
            del self._dirty[sid]
            started += 1
            self._start(sid, t)
        return started

    def _start(self, sid: str, t: _Tracked) -> None:
        t.dirty_at = None
        t.writing = True
        task = asyncio.ensure_future(self._write(sid, t))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, sid: str, t: _Tracked) -> None:
        record = SessionRecord(
            sid, t.rooms, t.data, self._epoch(), self._gw, t.live, self._wall(), t.who
        ).encode()
        try:
            if t.ended:
                if t.revision is not None:
                    await self._kv.delete(t.pid, last=t.revision)
                revision = t.revision
            elif t.revision is None:
                revision = await self._kv.create(t.pid, record)
            else:
                revision = await self._kv.update(t.pid, record, last=t.revision)
        except KeyWrongLastSequenceError:
            self._on_write(RESULT_CONFLICT)
            log.info("session taken over elsewhere; no longer written here", extra={"sid": sid})
            if self._tracked.get(sid) is t:
                self.forget(sid)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_write(RESULT_ERROR)
            self._warnings.warning("write", "session write failed, retrying: %s", exc)
            t.retry_at = self._clock() + RETRY_AFTER_ERROR_S
            t.writing = False
            if self._tracked.get(sid) is t:
                self._mark(sid)
            return
        self._on_write(RESULT_OK)
        t.writing = False
        t.revision = revision
        if self._tracked.get(sid) is not t:
            return
        if not t.live and t.dirty_at is None:
            del self._tracked[sid]  # its last word is written; the TTL ends it
            self._ending.discard(t.pid)
            return
        t.refresh_at = self._clock() + self._refresh_s
        heapq.heappush(self._refresh, (t.refresh_at, sid))
