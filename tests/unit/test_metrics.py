"""Metric labels stay bounded: no room name, socket id or user id ever becomes a label
(cardinality would grow with every client), so every label name comes from a short
allow-list and label values from fixed sets."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from gateway.app import _reason_label
from gateway.metrics import (
    LAG_BUCKETS_S,
    GatewayMetrics,
    LoopCounter,
    LoopCounterFamily,
    LoopHistogram,
)
from publisher.stats import PublisherStats

ALLOWED_LABELS = frozenset(
    {"reason", "kind", "outcome", "status", "version", "method", "op", "result", "direction", "by"}
)
"""Each names a category whose values the code fixes, never the traffic (`method`: an
HTTP API method name, or "unknown" for any other path: gateway/api.py; `op` and
`result`: a room directory write, put/delete/purge_peer and ok/error:
gateway/directory.py; `direction`: sent or received, gateway/presence/; `by`: how a
forced disconnect addressed its sockets, socket, room or user: gateway/node.py)."""


def label_names(owner: Any, registry: CollectorRegistry) -> dict[str, set[str]]:
    """Metric name → its label names: declared by the metric objects `owner` holds
    (a labelled metric exports no sample before its first use), and seen on every
    sample the registry exports (which covers collectors of other kinds)."""
    names: dict[str, set[str]] = {
        v._name: set(v._labelnames)
        for v in vars(owner).values()
        if isinstance(v, MetricWrapperBase)
    }
    for v in vars(owner).values():
        if isinstance(v, LoopCounterFamily):
            names[v.name.removesuffix("_total")] = {v.label}
    for family in registry.collect():
        seen = names.setdefault(family.name, set())
        for sample in family.samples:
            seen |= set(sample.labels) - {"le"}  # a histogram's bucket bound
    return names


def test_gateway_metric_labels_come_from_the_allow_list() -> None:
    metrics = GatewayMetrics()
    names = label_names(metrics, metrics.registry)
    assert len(names) >= 15  # the check saw them all
    assert all(n.startswith("sailcast_gateway_") for n in names)
    bad = {
        name: labels - ALLOWED_LABELS for name, labels in names.items() if labels - ALLOWED_LABELS
    }
    assert not bad


def test_publisher_metric_labels_come_from_the_allow_list() -> None:
    registry = CollectorRegistry()
    stats = PublisherStats(registry)
    names = label_names(stats, registry)
    assert set(names) >= {
        "sailcast_publisher_messages",
        "sailcast_publisher_reconnects",
        "sailcast_publisher_requests",
    }
    bad = {
        name: labels - ALLOWED_LABELS for name, labels in names.items() if labels - ALLOWED_LABELS
    }
    assert not bad


@given(st.text(max_size=80))
def test_disconnect_reasons_map_to_a_fixed_set(reason: str) -> None:
    assert _reason_label(reason) in {
        "client",
        "server",
        "ping",
        "transport_close",
        "transport_error",
        "other",
    }


class _One(Collector):
    def __init__(self, metric: LoopCounter | LoopCounterFamily | LoopHistogram) -> None:
        self.m = metric

    def collect(self) -> Any:
        yield self.m.metric()


def exposition(registry: CollectorRegistry) -> list[str]:
    """The samples as /metrics shows them, without the `_created` ones (time of day)."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=40))
def test_loop_metrics_expose_what_prometheus_client_would(values: list[float]) -> None:
    """The fanout path's lock-free counters and histogram read the same on /metrics as
    the prometheus_client objects they replace."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hist = LoopHistogram("lag_seconds", "doc", LAG_BUCKETS_S)
    count = LoopCounter("n_total", "doc")
    family = LoopCounterFamily("m_total", "doc", "kind")
    for m in (hist, count, family):
        ours.register(_One(m))
    ref_hist = Histogram("lag_seconds", "doc", buckets=LAG_BUCKETS_S, registry=theirs)
    ref_count = Counter("n_total", "doc", registry=theirs)
    ref_family = Counter("m_total", "doc", ["kind"], registry=theirs)
    for i, v in enumerate(values):
        hist.observe(v)
        ref_hist.observe(v)
        count.inc(v)
        ref_count.inc(v)
        kind = "room" if i % 3 else "blast"
        family.labels(kind).inc()
        ref_family.labels(kind).inc()
    assert exposition(ours) == exposition(theirs)
