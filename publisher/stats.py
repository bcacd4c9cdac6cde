"""Publisher counters, exported to Prometheus only when a registry is handed in (so a
worker that does not want prometheus_client never imports it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

PREFIX: Final = "sailcast_publisher_"


class PublisherStats:
    """`reconnects` and `messages` are plain counts anyone may read (publisher/client.py
    increments `reconnects` in its reconnect callback); with a registry, the rest are
    prometheus_client counters, and `reconnects` is read from here at scrape time."""

    def __init__(self, registry: Any = None) -> None:
        self.reconnects = 0
        self.messages = 0
        self._messages: Any = None
        self._requests: Any = None
        self._errors: Any = None
        self._latency: Any = None
        self._stored_duplicates: Any = None
        self._stored_failures: Any = None
        self._presence: Any = None
        self._presence_fallbacks: Any = None
        if registry is not None:
            from prometheus_client import Counter, Histogram

            p = PREFIX
            self._messages = Counter(
                p + "messages_total", "Messages published, by kind", ["kind"], registry=registry
            )
            self._errors = Counter(
                p + "errors_total", "Publishes that failed, by kind", ["kind"], registry=registry
            )
            self._requests = Counter(
                p + "requests_total",
                "Requests to gateways, by kind and outcome",
                ["kind", "outcome"],
                registry=registry,
            )
            self._latency = Histogram(
                p + "request_duration_seconds", "Request round trips", ["kind"], registry=registry
            )
            self._stored_duplicates = Counter(
                p + "stored_duplicates_total",
                "Stored publishes JetStream had already stored (a retry with the same msg_id)",
                ["kind"],
                registry=registry,
            )
            self._stored_failures = Counter(
                p + "stored_failures_total",
                "Stored publishes not confirmed stored, by reason (no_stream, refused, "
                "timeout, not_sent, closed); each is also in errors_total",
                ["reason"],
                registry=registry,
            )
            # members and counts (i12-members: publisher/members.py)
            self._presence = Counter(
                p + "presence_queries_total",
                "members/count calls, by kind and outcome (ok, partial, timeout)",
                ["kind", "outcome"],
                registry=registry,
            )
            self._presence_fallbacks = Counter(
                p + "presence_fallbacks_total",
                "members/count calls that asked every gateway (no room directory: no JetStream)",
                registry=registry,
            )
            registry.register(_Reconnects(self))

    def published(self, kind: str) -> None:
        self.messages += 1
        if self._messages is not None:
            self._messages.labels(kind).inc()

    def stored(self, kind: str, *, duplicate: bool) -> None:
        """A history room's message confirmed stored (publisher/stored.py)."""
        self.published(kind)
        if duplicate and self._stored_duplicates is not None:
            self._stored_duplicates.labels(kind).inc()

    def stored_failure(self, reason: str) -> None:
        """Why a stored publish failed (publisher/pipeline.py); `error` counts it too."""
        if self._stored_failures is not None:
            self._stored_failures.labels(reason).inc()

    def error(self, kind: str) -> None:
        if self._errors is not None:
            self._errors.labels(kind).inc()

    def request(self, kind: str, outcome: str, started: float) -> None:
        if self._requests is not None:
            self._requests.labels(kind, outcome).inc()
            self._latency.labels(kind).observe(time.perf_counter() - started)

    def presence(self, kind: str, outcome: str, started: float) -> None:
        """A members/count call done (publisher/members.py); its latency goes with the
        requests' (`request_duration_seconds{kind}`)."""
        if self._presence is not None:
            self._presence.labels(kind, outcome).inc()
            self._latency.labels(kind).observe(time.perf_counter() - started)

    def presence_fallback(self) -> None:
        if self._presence_fallbacks is not None:
            self._presence_fallbacks.inc()


class _Reconnects:
    """`sailcast_publisher_reconnects_total` as a collector reading `stats.reconnects`:
    the count has one home, so the metric cannot drift from it."""

    def __init__(self, stats: PublisherStats) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        yield self._family(None)

    def collect(self) -> Iterator[Metric]:
        yield self._family(self._stats.reconnects)

    @staticmethod
    def _family(value: int | None) -> Metric:
        from prometheus_client.core import CounterMetricFamily

        return CounterMetricFamily(
            PREFIX + "reconnects", "Reconnections to NATS after a lost connection", value=value
        )
