"""Metric labels stay bounded: no room name, socket id or user id ever becomes a label
(cardinality would grow with every client), so every label name comes from a short
allow-list and label values from fixed sets."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from gateway.app import _reason_label
from gateway.metrics import GatewayMetrics
from publisher.stats import PublisherStats

ALLOWED_LABELS = frozenset({"reason", "kind", "outcome", "status", "version"})
"""Each names a category whose values the code fixes, never the traffic."""


def label_names(owner: Any, registry: CollectorRegistry) -> dict[str, set[str]]:
    """Metric name → its label names: declared by the metric objects `owner` holds
    (a labelled metric exports no sample before its first use), and seen on every
    sample the registry exports (which covers collectors of other kinds)."""
    names: dict[str, set[str]] = {
        v._name: set(v._labelnames)
        for v in vars(owner).values()
        if isinstance(v, MetricWrapperBase)
    }
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
