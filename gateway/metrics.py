"""Prometheus metrics of one gateway, on their own registry (served on the ops port).

No label ever carries a room, socket or user id: cardinality stays fixed however many
clients connect.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from shared.version import __version__

LAG_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
VREQ_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5, 10)


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
        self.broker_messages = Counter(
            p + "broker_messages_received_total",
            "Messages received from NATS, by kind",
            ["kind"],
            registry=r,
        )
        self.deliveries = Counter(
            p + "deliveries_total", "Packets handed to local sockets", registry=r
        )
        self.drops = Counter(
            p + "drops_total", "Messages or deliveries dropped, by reason", ["reason"], registry=r
        )
        self.slow_disconnects = Counter(
            p + "slow_client_disconnects_total",
            "Sockets disconnected because their outbound buffer was full",
            registry=r,
        )
        self.lag = Histogram(
            p + "delivery_lag_seconds",
            "Publish timestamp to hand-off to local sockets",
            buckets=LAG_BUCKETS_S,
            registry=r,
        )
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
        self.build = Info(p + "build", "Build information", registry=r)
        self.build.info({"version": __version__})
