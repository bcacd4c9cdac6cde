"""This gateway's entries in the room directory (shared/directory.py): one per room it
holds NATS interest in, so members and counts are asked only of the gateways holding
a room.

An entry is written when the gateway's interest in a room starts and purged when it
ends (`gateway.interest.Interest` calls `hold` / `release` beside its SUB / UNSUB, so a
join's reply follows its entry). A write that fails never fails the join: it is
counted (`directory_writes_total{op,result="error"}`), logged, and retried in the
background until the entry matches what the gateway holds. The stream keeps entries in
memory: every held room is written again after a NATS reconnect, and when the stream
is found gone or made anew (checked every 10 s), it is made again and rewritten.
A join waits at most HOLD_WAIT_S for its entry. A peer found gone
(its heartbeats stopped or it said `down`, and its own subject has no responder) has
its entries purged by every live gateway; a gateway purges its own at start (a former
process with its id) and at stop.

Without JetStream there is no directory: `open_directory` logs it once and returns
None, and publishers ask every gateway instead (docs/presence.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Final

import orjson
from nats.aio.client import Client as NatsClient
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError

from gateway.logs import Throttled
from shared.directory import (
    directory_stream,
    directory_subjects,
    entry_subject,
    gateway_filter,
)
from shared.errors import TransportError

log = logging.getLogger(__name__)

JS_API_TIMEOUT_S: Final = 2.0
HOLD_WAIT_S: Final = 0.5
"""A join waits this long at most for its room's entry (then it is written behind)."""
ENSURE_DEADLINE_S: Final = 30.0
ENSURE_RETRY_S: Final = 0.5
RETRY_S: Final = 1.0
"""Entries whose last write failed are written again this often."""
CHECK_EVERY_RETRIES: Final = 10
"""Every this many retry ticks (10 s), the stream is checked to be the same one."""
OP_PUT: Final = "put"
OP_DELETE: Final = "delete"
OP_PURGE_PEER: Final = "purge_peer"
RESULT_OK: Final = "ok"
RESULT_ERROR: Final = "error"

OnWrite = Callable[[str, str], None]
"""Told (op, result) of every directory write."""


def stream_config(prefix: str, replicas: int) -> StreamConfig:
    """The last entry of each (room, gateway) subject, in memory: derived state that
    the gateways write again after any loss (reconnect, restart)."""
    return StreamConfig(
        name=directory_stream(prefix),
        description="Sailcast room directory: which gateways hold which rooms",
        subjects=[directory_subjects(prefix)],
        max_msgs_per_subject=1,
        allow_direct=True,
        storage=StorageType.MEMORY,
        num_replicas=replicas,
    )


async def open_directory(
    nc: NatsClient, *, prefix: str, gateway_id: str, replicas: int, on_write: OnWrite
) -> RoomDirectory | None:
    """Create or reconcile the directory stream (idempotent, many gateways at once);
    None (logged once) when the server has no JetStream. JetStream there but not ready
    (a leader election) is waited for up to ENSURE_DEADLINE_S, then TransportError: a
    gateway that wrote no entries would be invisible to members and counts."""
    js = nc.jetstream(timeout=JS_API_TIMEOUT_S)
    config = stream_config(prefix, replicas)
    deadline = time.monotonic() + ENSURE_DEADLINE_S
    while True:
        try:
            await _ensure(js, config)
            break
        except ServiceUnavailableError as exc:
            if exc.code is None:  # no responders: nothing serves the JetStream API
                log.warning(
                    "JetStream is not enabled on the NATS server: no room directory; "
                    "members and counts ask every gateway (docs/presence.md)"
                )
                return None
            last: Exception = exc
        except (NatsTimeoutError, TimeoutError) as exc:
            last = exc
        except APIError as exc:
            raise TransportError(
                f"JetStream refused the room directory {config.name}: {exc.description or exc}"
            ) from exc
        if time.monotonic() >= deadline:
            raise TransportError(
                f"JetStream: cannot create the room directory {config.name} within "
                f"{ENSURE_DEADLINE_S:g}s: {last!r}"
            ) from last
        log.info("room directory %s not ready yet (%r); trying again", config.name, last)
        await asyncio.sleep(ENSURE_RETRY_S)
    directory = RoomDirectory(
        js, prefix=prefix, gateway_id=gateway_id, on_write=on_write, config=config
    )
    await directory.purge_gateway(gateway_id)  # a former process with our id
    await directory.check_stream()  # which stream our entries go to
    log.info("room directory %s ready (R%d)", config.name, replicas)
    return directory


async def _ensure(js: JetStreamContext, config: StreamConfig) -> None:
    name = config.name
    assert name is not None
    try:
        await js.add_stream(config)  # an identical one exists: success too
    except BadRequestError:  # made before with another replica count
        current = (await js.stream_info(name)).config
        if current.num_replicas == config.num_replicas:
            raise
        current.num_replicas = config.num_replicas
        try:
            await js.update_stream(current)
        except APIError as update_error:  # e.g. more replicas than servers
            log.warning("room directory %s kept as it is: %s", name, update_error)


class RoomDirectory:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        prefix: str,
        gateway_id: str,
        on_write: OnWrite,
        config: StreamConfig | None = None,
    ) -> None:
        self._js = js
        self._config = config
        """The stream to make again when it is gone (a single server restarted loses a
        memory stream); None: never made here."""
        self._prefix = prefix
        self._gw = gateway_id
        self._stream = directory_stream(prefix)
        self._on_write = on_write
        self._held: set[str] = set()
        self._dirty: set[str] = set()
        """Rooms whose entry may not match `_held` (a write failed)."""
        self._task: asyncio.Task[None] | None = None
        self._created: str | None = None
        """When the stream our entries are in was made (check_stream)."""
        self._warnings = Throttled(log)

    @property
    def count(self) -> int:
        """Entries this gateway holds (the `directory_rooms` gauge)."""
        return len(self._held)

    def __contains__(self, room: str) -> bool:
        return room in self._held

    def start(self) -> None:
        self._task = asyncio.create_task(self._retry_loop(), name="directory-retry")

    async def stop(self) -> None:
        """Stop retrying; purge our entries (the peers would, once we are gone)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._held.clear()
        self._dirty.clear()
        await self.purge_gateway(self._gw)

    async def hold(self, room: str) -> None:
        """Our interest in `room` started: write its entry (never raises). Waits at
        most HOLD_WAIT_S: a slow JetStream must not make joins time out; the write
        goes on, and is retried if it fails."""
        self._held.add(room)
        write = asyncio.ensure_future(self._put(room))
        try:
            ok = await asyncio.wait_for(asyncio.shield(write), HOLD_WAIT_S)
        except TimeoutError:
            self._warnings.warning("slow", "room directory write slower than %ss", HOLD_WAIT_S)
            write.add_done_callback(lambda done: self._settled(room, done))
            return
        if not ok:
            self._dirty.add(room)

    def _settled(self, room: str, write: asyncio.Future[bool]) -> None:
        if write.cancelled() or not write.result():
            self._dirty.add(room)

    async def release(self, room: str) -> None:
        """Our interest in `room` ended: purge its entry (never raises)."""
        if room not in self._held:
            return
        self._held.discard(room)
        if not await self._delete(room):
            self._dirty.add(room)

    async def rewrite(self) -> None:
        """After a reconnect: the stream made again if it is gone, and every held room
        written again (the server may have lost them); failures are retried in the
        background."""
        await self._ensure_stream()
        await self._write_all()

    async def _write_all(self) -> None:
        for room in list(self._held):
            if not await self._put(room):
                self._dirty.add(room)

    async def purge_gateway(self, gateway_id: str) -> bool:
        """Remove every entry of one gateway (a dead peer's, or our own)."""
        op = OP_PURGE_PEER if gateway_id != self._gw else OP_DELETE
        try:
            await self._js.purge_stream(
                self._stream, subject=gateway_filter(self._prefix, gateway_id)
            )
        except Exception as exc:
            self._failed(op, f"purge of gateway {gateway_id}'s entries", exc, retried=False)
            return False
        self._on_write(op, RESULT_OK)
        return True

    async def _put(self, room: str) -> bool:
        body = orjson.dumps({"gw": self._gw, "at": time.time()})
        try:
            await self._js.publish(entry_subject(self._prefix, room, self._gw), body)
        except Exception as exc:
            self._failed(OP_PUT, "write", exc)
            return False
        self._on_write(OP_PUT, RESULT_OK)
        return True

    async def _delete(self, room: str) -> bool:
        try:
            await self._js.purge_stream(
                self._stream, subject=entry_subject(self._prefix, room, self._gw)
            )
        except Exception as exc:
            self._failed(OP_DELETE, "delete", exc)
            return False
        self._on_write(OP_DELETE, RESULT_OK)
        return True

    def _failed(self, op: str, what: str, exc: Exception, *, retried: bool = True) -> None:
        self._on_write(op, RESULT_ERROR)
        then = "retried" if retried else "not retried"
        self._warnings.warning(op, "room directory %s failed (%s): %r", what, then, exc)

    async def _ensure_stream(self) -> None:
        if self._config is None:
            return
        try:
            await _ensure(self._js, self._config)
        except Exception as exc:
            self._warnings.warning("ensure", "room directory stream not ensured: %r", exc)

    async def retry(self, rooms: Iterable[str] | None = None) -> None:
        """Bring the entries of `rooms` (default: those whose write failed) in line,
        making the stream again first if it is gone."""
        if self._dirty or rooms:
            await self._ensure_stream()
        for room in list(self._dirty if rooms is None else rooms):
            self._dirty.discard(room)
            held = room in self._held
            ok = await self._put(room) if held else await self._delete(room)
            if not ok or (room in self._held) != held:  # changed meanwhile: once more
                self._dirty.add(room)

    async def check_stream(self) -> None:
        """Write every held entry again when the stream is not the one they were
        written to (deleted and made again by someone, or lost by JetStream while our
        connection stayed up); make it again when it is gone."""
        if self._config is None:
            return
        try:
            info = await self._js.stream_info(self._stream)
        except NotFoundError:
            await self._ensure_stream()
            self._created = None  # the next check learns the new one's
            await self._write_all()
            return
        except Exception as exc:
            self._warnings.warning("check", "room directory stream not checked: %r", exc)
            return
        created = info.created.isoformat() if info.created is not None else ""
        if self._created is not None and created != self._created:
            log.warning("room directory stream was made again: writing our entries again")
            self._created = created
            await self._write_all()
        self._created = created

    async def _retry_loop(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(RETRY_S)
            beats += 1
            try:
                if beats % CHECK_EVERY_RETRIES == 0:
                    await self.check_stream()
                await self.retry()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("room directory retry failed")


__all__ = ["OP_DELETE", "OP_PURGE_PEER", "OP_PUT", "RoomDirectory", "open_directory"]
