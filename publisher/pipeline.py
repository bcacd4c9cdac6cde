"""Stored publishes pipelined: sent at once, their PubAcks checked as they come back.

Awaiting each JetStream PubAck before the next publish made a history room's broadcast
one round trip (~2,300/s against ~68,000/s on the core path). Here a stored publish is a
core publish with a reply subject of ours (`<inbox>.<n>`, one wildcard subscription for
all of them), so `send` returns once nats-py has the message; at most `window` of them
wait for their ack at a time (a publish past the window waits for room: memory stays
bounded and a slow JetStream slows the worker down).

Every ack is checked. A failed one (no stream answered, JetStream refused it) or one
missing after `timeout_s` is a `FailedPublish` handed to `report` (the publisher counts
it, passes it to on_error and raises it from its next flush: publisher/client.py). A
caller that wants to know at the call passes `wait=True`: its own failure is raised to
it instead of reported. nats-py's `js.publish_async` does the same but has no ack
timeout (a lost ack would hold its window slot forever) and reads private fields.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from nats.aio.client import Client as NatsClient

from publisher.failures import failed_publish
from publisher.stats import PublisherStats
from shared.errors import FailedPublish, TransportError

log = logging.getLogger(__name__)

DEFAULT_STORED_WINDOW: Final = 4096
"""Stored publishes awaiting their PubAck at most; the next one waits for room."""
NO_RESPONDERS_STATUS: Final = "503"
FAILURE_LOG_INTERVAL_S: Final = 5.0
"""A burst of failed acks (a deleted stream) logs one line per interval."""

Report = Callable[[FailedPublish], None]


@dataclass(slots=True)
class _Pending:
    subject: str
    body: bytes
    kind: str
    deadline: float
    waiter: asyncio.Future[None] | None = field(default=None)


class StoredPipeline:
    """The stored publishes of one publisher awaiting their acks. Not thread-safe: the
    publisher's event loop only."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        window: int,
        timeout_s: float,
        stats: PublisherStats,
        report: Report,
        no_stream: Callable[[], None],
    ) -> None:
        """`report(failure)`: a publish whose call has returned failed; `no_stream()`:
        no stream answered (the publisher re-reads its rules)."""
        if window < 1:
            raise ValueError(f"stored_window must be at least 1, got {window}")
        self._nc = nc
        self.window = window
        self.timeout_s = timeout_s
        self._stats = stats
        self._report = report
        self._no_stream = no_stream
        self._pending: dict[int, _Pending] = {}
        """Token → message, in send order (tokens increase, and so do deadlines)."""
        self._next = 0
        self._inbox = ""
        self._subscribing: asyncio.Lock | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sweeper: asyncio.Task[None] | None = None
        self._log_after = 0.0
        self._failed_since_log = 0

    @property
    def pending(self) -> int:
        """Stored publishes sent and not yet acknowledged (nor given up on)."""
        return len(self._pending)

    async def send(
        self, subject: str, body: bytes, kind: str, headers: dict[str, str], *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """Publish one message to be stored; return once it is handed to NATS (waiting
        first while `window` are unacknowledged). With `wait`, a future that completes
        with its ack (or its TransportError) instead of the failure being reported.
        TransportError here: it was not sent (counted)."""
        if not self._inbox:
            await self._subscribe()
        while len(self._pending) >= self.window:
            self._room.clear()
            await self._room.wait()
        token = self._next
        self._next = token + 1
        entry = _Pending(subject, body, kind, time.monotonic() + self.timeout_s)
        if wait:
            entry.waiter = asyncio.get_running_loop().create_future()
        self._pending[token] = entry
        self._idle.clear()
        try:
            await self._nc.publish(
                subject, body, reply=f"{self._inbox}.{token}", headers=headers or None
            )
        except Exception as exc:
            self._forget(token)
            self._stats.error(kind)
            self._stats.stored_failure("not_sent")
            raise TransportError(f"stored publish failed ({kind}): {exc}") from exc
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep())
        return entry.waiter

    async def settle(self, timeout: float) -> bool:
        """Wait until every stored publish sent so far is acknowledged or given up on
        (each is within `timeout_s`); False if some still wait after `timeout`."""
        if not self._pending:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Give up on what still waits (reported as failed) and stop the timer."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for token in list(self._pending):
            self._fail(token, "closed", TransportError("the publisher was closed before its ack"))

    # -- acks -------------------------------------------------------------------------
    async def _subscribe(self) -> None:
        if self._subscribing is None:
            self._subscribing = asyncio.Lock()
        async with self._subscribing:
            if self._inbox:
                return
            inbox = self._nc.new_inbox()
            try:
                await self._nc.subscribe(inbox + ".*", cb=self._on_ack)
            except Exception as exc:
                raise TransportError(f"cannot subscribe to stored publishes' acks: {exc}") from exc
            self._inbox = inbox

    async def _on_ack(self, msg: Any) -> None:
        try:
            token = int(msg.subject[len(self._inbox) + 1 :])
        except ValueError:
            return
        entry = self._pending.get(token)
        if entry is None:  # given up on already (timed out): it was reported then
            log.debug("late ack for a stored publish (%s)", msg.subject)
            return
        headers = msg.headers
        if headers and headers.get("Status") == NO_RESPONDERS_STATUS:
            self._no_stream()
            self._fail(
                token,
                "no_stream",
                TransportError(
                    f"{entry.kind} not stored: no history stream answered on {entry.subject} "
                    "(the stream was deleted or is not there yet; the rules are re-read)"
                ),
            )
            return
        try:
            answer = orjson.loads(msg.data)
            error = answer.get("error")
        except Exception:
            answer, error = {}, {"description": f"unreadable PubAck {msg.data[:80]!r}"}
        if error:
            described = error.get("description") if isinstance(error, dict) else error
            self._fail(
                token,
                "refused",
                TransportError(f"JetStream refused to store {entry.kind}: {described}"),
            )
            return
        del self._pending[token]
        self._freed()
        self._stats.stored(entry.kind, duplicate=bool(answer.get("duplicate")))
        if entry.waiter is not None and not entry.waiter.done():
            entry.waiter.set_result(None)

    async def _sweep(self) -> None:
        """Give up on the oldest pending publish once its deadline has passed."""
        while self._pending:
            token, entry = next(iter(self._pending.items()))
            delay = entry.deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._fail(
                token,
                "timeout",
                TransportError(
                    f"{entry.kind} not confirmed stored within {self.timeout_s}s (it may have "
                    "been stored: retry with the same msg_id to have it stored once)"
                ),
            )

    def _fail(self, token: int, reason: str, error: TransportError) -> None:
        entry = self._forget(token)
        if entry is None:
            return
        self._stats.error(entry.kind)
        self._stats.stored_failure(reason)
        if entry.waiter is not None:  # the caller waits: it gets its own error
            if not entry.waiter.done():
                entry.waiter.set_exception(error)
            return
        self._failed_since_log += 1
        now = time.monotonic()
        if now >= self._log_after:
            self._log_after = now + FAILURE_LOG_INTERVAL_S
            log.warning(
                "%d stored publish(es) failed (logged at most every %ss), the last: %s",
                self._failed_since_log,
                FAILURE_LOG_INTERVAL_S,
                error,
            )
            self._failed_since_log = 0
        self._report(failed_publish(entry.subject, entry.body, entry.kind, error))

    def _forget(self, token: int) -> _Pending | None:
        entry = self._pending.pop(token, None)
        if entry is not None:
            self._freed()
        return entry

    def _freed(self) -> None:
        if len(self._pending) < self.window:
            self._room.set()
        if not self._pending:
            self._idle.set()
