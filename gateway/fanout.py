"""Hand one pre-encoded packet to many local connections.

The packet is built and framed once per message (gateway.engine.event_packet); each
recipient costs one `Connection.send`, which writes the shared frame to the wire or
queues it, within the connection's bounds. No task and no JSON work per recipient.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.engine.api import Connection, OutboundPacket
from gateway.metrics import GatewayMetrics


class Fanout:
    """The local connections by socket id, and delivery of one packet to many."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._conns: dict[str, Connection] = {}
        self._count = metrics.deliveries.inc

    def attach(self, conn: Connection) -> None:
        self._conns[conn.sid] = conn

    def detach(self, sid: str) -> Connection | None:
        """Forget the connection; returns it if it was attached."""
        return self._conns.pop(sid, None)

    def get(self, sid: str) -> Connection | None:
        return self._conns.get(sid)

    def connections(self) -> list[Connection]:
        return list(self._conns.values())

    def deliver(
        self, packet: OutboundPacket, sids: Iterable[str], omit: frozenset[str] = frozenset()
    ) -> int:
        """Send one shared packet to each recipient; each connection enforces its own
        bounds."""
        conns = self._conns
        sent = 0
        for sid in sids:
            if sid in omit:
                continue
            conn = conns.get(sid)
            if conn is None or conn.closed:
                continue
            conn.send(packet)
            sent += 1
        self._count(sent)
        return sent
