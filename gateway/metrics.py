"""Prometheus metrics of one gateway, on their own registry (served on the ops port).

No label ever carries a room, socket or user id: cardinality stays fixed however many
clients connect.

The few metrics bumped for every NATS message (messages received, deliveries, delivery
lag) are plain numbers (`LoopCounter`, `LoopHistogram`) read by a collector at scrape
time: prometheus_client takes a lock per update (0.5 µs a counter, 2 µs a histogram),
which on the fanout path cost more than decoding the message. They are only touched
from the event loop, and /metrics is served on that same loop, so nothing races.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.version import __version__

LAG_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
VREQ_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5, 10)


class _Count:
    """One counter value, updated from the event loop only: `inc` is one addition."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class LoopCounter(_Count):
    """An unlabelled counter of the fanout path."""

    __slots__ = ("doc", "name")

    def __init__(self, name: str, doc: str) -> None:
        super().__init__()
        self.name, self.doc = name, doc

    def metric(self) -> Metric:
        return CounterMetricFamily(self.name, self.doc, value=self.value)


class LoopCounterFamily:
    """A counter of the fanout path with one label (`labels(v).inc()` as in
    prometheus_client; look the child up once, outside the loop)."""

    def __init__(self, name: str, doc: str, label: str) -> None:
        self.name, self.doc, self.label = name, doc, label
        self._children: dict[str, _Count] = {}

    def labels(self, value: str) -> _Count:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = _Count()
        return child

    def metric(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, child in self._children.items():
            family.add_metric([value], child.value)
        return family


class LoopHistogram:
    """A histogram updated from the event loop only: `observe` is a bisect and two
    additions."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float]) -> None:
        self.name, self.doc = name, doc
        self._bounds = tuple(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1  # `le`: bound >= value
        self._sum += value

    def metric(self) -> Metric:
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self._sum)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _LoopCollector(Collector):
    def __init__(self, metrics: Sequence[LoopCounter | LoopCounterFamily | LoopHistogram]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for m in self._metrics:
            yield m.metric()


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "sailcast_gateway_"
        self.connections = Gauge(p + "connections", "Sockets connected now", registry=r)
        self.connects = Counter(p + "connects_total", "Sockets accepted", registry=r)
        self.disconnects = Counter(
            p + "disconnects_total", "Sockets gone, by reason", ["reason"], registry=r
        )
        self.rooms = Gauge(p + "rooms", "Rooms with at least one local member", registry=r)
        self.broker_subscriptions = Gauge(
            p + "broker_subscriptions", "NATS subscriptions held", registry=r
        )
        self.broker_messages = LoopCounterFamily(
            p + "broker_messages_received_total", "Messages received from NATS, by kind", "kind"
        )
        self.deliveries = LoopCounter(p + "deliveries_total", "Packets handed to local sockets")
        self.drops = Counter(
            p + "drops_total", "Messages or deliveries dropped, by reason", ["reason"], registry=r
        )
        self.slow_disconnects = Counter(
            p + "slow_client_disconnects_total",
            "Sockets disconnected because their outbound buffer was full",
            registry=r,
        )
        self.lag = LoopHistogram(
            p + "delivery_lag_seconds",
            "Publish timestamp to hand-off to local sockets",
            LAG_BUCKETS_S,
        )
        r.register(_LoopCollector((self.broker_messages, self.deliveries, self.lag)))
        self.control_requests = Counter(
            p + "control_requests_total",
            "Membership requests applied, by kind and outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.refusals = Counter(
            p + "refusals_total",
            "Connections, packets or requests refused by a limit, by reason",
            ["reason"],
            registry=r,
        )
        self.nats_reconnects = Counter(
            p + "nats_reconnects_total", "Reconnections to NATS", registry=r
        )
        self.nats_connected = Gauge(p + "nats_connected", "1 while NATS is connected", registry=r)
        self.ready = Gauge(p + "ready", "1 while /readyz answers 200", registry=r)
        # the history stream (gateway/history/stream.py), as last read (every ~10 s)
        self.history_stream_messages = Gauge(
            p + "history_stream_messages", "Messages in the history stream", registry=r
        )
        self.history_stream_bytes = Gauge(
            p + "history_stream_bytes", "Bytes in the history stream", registry=r
        )
        # virtual requests and connection hooks (gateway/vrequests.py, gateway/auth.py)
        self.virtual_requests = Counter(
            p + "virtual_requests_total",
            "Virtual requests answered, by status class (2xx…5xx) or parse_error",
            ["status"],
            registry=r,
        )
        self.virtual_request_duration = Histogram(
            p + "virtual_request_duration_seconds",
            "Virtual request forwarded to a worker until its answer (or 503/504)",
            buckets=VREQ_BUCKETS_S,
            registry=r,
        )
        self.connect_rejections = Counter(
            p + "connect_rejections_total",
            "Sockets refused by the Origin rules (at the HTTP handshake too) or the "
            "before-connect check, by reason",
            ["reason"],
            registry=r,
        )
        # the HTTP server API (gateway/api.py): `method` is one of its fixed names
        self.api_requests = Counter(
            p + "api_requests_total",
            "HTTP API calls answered, by method and outcome (ok or the error code)",
            ["method", "outcome"],
            registry=r,
        )
        self.api_request_duration = Histogram(
            p + "api_request_duration_seconds",
            "HTTP API call received until answered, by method",
            ["method"],
            buckets=VREQ_BUCKETS_S,
            registry=r,
        )
        # connection-state recovery (gateway/recovery/)
        self.recoveries = Counter(
            p + "recoveries_total",
            "Connects that presented a session: recovered (reason ok) or given a fresh "
            "session, by reason (expired, epoch, history_trimmed, ...)",
            ["outcome", "reason"],
            registry=r,
        )
        self.session_writes = Counter(
            p + "session_writes_total",
            "Session record writes to the KV bucket, by outcome (ok, conflict: taken "
            "over elsewhere, error: retried)",
            ["outcome"],
            registry=r,
        )
        # history rooms on the live path (gateway/history/feed.py, docs/recovery.md)
        self.history_gaps = Counter(
            p + "history_gaps_total",
            "Position gaps seen on history rooms (a message missing between NATS and us)",
            registry=r,
        )
        self.history_repaired = Counter(
            p + "history_repaired_messages_total",
            "Missing history messages fetched from the stream and delivered in order",
            registry=r,
        )
        self.history_lost = Counter(
            p + "history_lost_total",
            "History gaps that could not be repaired, by reason (trimmed, unavailable)",
            ["reason"],
            registry=r,
        )
        self.history_duplicates = Counter(
            p + "history_duplicates_total",
            "History messages dropped because their position was already delivered",
            registry=r,
        )
        self.replayed_messages = Counter(
            p + "replayed_messages_total",
            "Missed messages replayed to recovered sockets",
            registry=r,
        )
        # issue 12, identity: who a socket is and its rooms at connect (gateway/connect_identity.py)
        self.sockets_with_user = Gauge(
            p + "sockets_with_user", "Local sockets that carry a user id", registry=r
        )
        self.connect_rooms = Counter(
            p + "connect_rooms_total",
            "Rooms joined at connect, before the CONNECT acknowledgement (user rooms and "
            "the rooms of the JWT claim or the before-connect answer)",
            registry=r,
        )
        self.after_connect_notices = Counter(
            p + "after_connect_notices_total",
            "After-connect notices published to the workers, by outcome (sent, failed)",
            ["outcome"],
            registry=r,
        )
        self.build = Info(p + "build", "Build information", registry=r)
        self.build.info({"version": __version__})
