"""Broadcasts to history rooms: published through JetStream, their storage confirmed.

Which rooms keep history is the gateways' setting (`--history`): they write the rules'
text into the history stream's metadata (shared.history.METADATA_KEY), and a publisher
reads it there at connect, every HISTORY_RULES_REFRESH_S and after a reconnect. No
stream (or no JetStream) means no history: every room takes today's core path.

A history room's message goes to `<p>.h.<room>` as a JetStream publish whose PubAck
is checked in the background (publisher/pipeline.py): the call returns once it is sent;
a failure is reported (on_error, the next flush raises PublishFailed), or raised at the
call with `wait=True`. It is not held through an outage (publisher.hold): JetStream
stores it whoever is subscribed, and the gateways' gap repair and recovery deliver it,
so holding it for the gateways would only delay it. While NATS is unreachable its ack
is missing and it fails after the publisher's `request_timeout_s`; that says it may
have been stored, and a retry with the same `msg_id` (header `Nats-Msg-Id`) is stored
once within the stream's duplicate window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError, ServiceUnavailableError

from publisher.pipeline import DEFAULT_STORED_WINDOW, Report, StoredPipeline
from publisher.stats import PublisherStats
from shared.errors import ConfigError, FailedPublish
from shared.history import METADATA_KEY, HistoryRules, stream_name

log = logging.getLogger(__name__)

HISTORY_RULES_REFRESH_S: Final = 10.0
"""How often a publisher re-reads the rules (a gateway with new rules updated them)."""
RULES_RETRY_S: Final = 1.0
"""After a failed read (a timeout, JetStream electing a leader), the next one comes this
soon: meanwhile the rules read last stay in force."""
RULES_READ_TIMEOUT_S: Final = 2.0
NO_STREAM_REREAD_S: Final = 1.0
"""A burst of publishes no stream answered re-reads the rules once per this, not each."""


class StoredPublishing:
    """The JetStream side of one publisher: the rules it routes by and the stored
    publish. `rules` is empty until read, and whenever no stream answers."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        prefix: str,
        timeout_s: float,
        stats: PublisherStats,
        apply: Callable[[HistoryRules], None],
        window: int = DEFAULT_STORED_WINDOW,
        report: Report | None = None,
    ) -> None:
        """`apply(rules)` hears every reading (the publisher routes by it); `window`
        and `report`: the stored publishes' (publisher/pipeline.py; without `report`,
        a failure is only counted and logged)."""
        self._js = nc.jetstream(timeout=RULES_READ_TIMEOUT_S)
        self.stream = stream_name(prefix)
        self.timeout_s = timeout_s
        self._apply = apply
        self._reread_at = 0.0
        self.pipeline = StoredPipeline(
            nc,
            window=window,
            timeout_s=timeout_s,
            stats=stats,
            report=report or _ignore,
            no_stream=self._no_stream,
        )
        self.rules = HistoryRules()
        self._failures = 0
        """Failed reads in a row: the next read comes sooner, the log line only once."""
        self._refresh: asyncio.Task[None] | None = None

    async def read_rules(self) -> HistoryRules:
        """Read the rules from the stream's metadata. No stream, or no JetStream at all
        (nothing answers its API): none. A read that fails otherwise (a timeout, JetStream
        present but unavailable while it elects a leader) keeps the rules we had, so a
        NATS failover does not switch history off."""
        try:
            info = await self._js.stream_info(self.stream)
        except NotFoundError:
            rules = HistoryRules()
        except ServiceUnavailableError as exc:
            if exc.code is not None:  # JetStream answered "unavailable": try again soon
                return self._keep(exc)
            rules = HistoryRules()  # no responders: this NATS runs no JetStream
        except Exception as exc:
            return self._keep(exc)
        else:
            text = (info.config.metadata or {}).get(METADATA_KEY, "")
            try:
                rules = HistoryRules.parse(text)
            except ConfigError:
                log.warning("stream %s holds rules %r that do not parse", self.stream, text)
                rules = HistoryRules()
        if self._failures:
            log.info("history rules read again from stream %s", self.stream)
        self._failures = 0
        if rules != self.rules:
            log.info("history rules: %s", rules.text or "none (no history stream)")
        self.rules = rules
        self._apply(rules)
        return rules

    def _keep(self, exc: Exception) -> HistoryRules:
        self._failures += 1
        log.log(
            logging.WARNING if self._failures == 1 else logging.DEBUG,
            "history rules not read from stream %s (keeping %s; retrying): %s",
            self.stream,
            self.rules.text or "none",
            exc or type(exc).__name__,
        )
        return self.rules

    def _next_read_s(self) -> float:
        """RULES_RETRY_S after a failure, doubling while they go on, at most the period."""
        if not self._failures:
            return HISTORY_RULES_REFRESH_S
        backoff: float = RULES_RETRY_S * 2.0 ** min(self._failures - 1, 10)
        return min(HISTORY_RULES_REFRESH_S, backoff)

    def start(self) -> None:
        """Re-read the rules every HISTORY_RULES_REFRESH_S (sooner after a failed read)."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(self._next_read_s())
                await self.read_rules()

        self._refresh = asyncio.ensure_future(loop())

    def reread_soon(self) -> None:
        """After a reconnect, or a publish no stream answered: the stream may have
        changed (deleted, recreated with other rules)."""
        task = asyncio.ensure_future(self.read_rules())
        task.add_done_callback(_quiet)

    def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None

    def _no_stream(self) -> None:
        """A stored publish no stream answered: re-read the rules (once a burst)."""
        now = time.monotonic()
        if now >= self._reread_at:
            self._reread_at = now + NO_STREAM_REREAD_S
            self.reread_soon()

    async def publish(
        self, subject: str, body: bytes, kind: str, headers: dict[str, str], *, wait: bool
    ) -> asyncio.Future[None] | None:
        """Store one message: returns once sent (publisher/pipeline.py); with `wait`, a
        future of its ack that raises TransportError if it was not stored."""
        return await self.pipeline.send(subject, body, kind, headers, wait=wait)


def _quiet(task: asyncio.Future[HistoryRules]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("history rules not re-read", exc_info=task.exception())


def _ignore(failure: FailedPublish) -> None:
    """No one to report to: the pipeline has counted and logged it."""
