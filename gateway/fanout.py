"""Hand one pre-encoded packet to many local connections.

The packet is built and encoded once per message; each recipient costs one
`Connection.send` (gateway.engine.api), which writes the shared frame to the wire or
queues it, within the connection's bounds. No task and no JSON work per recipient.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from engineio import packet as eio_packet

from gateway.engine.api import Connection, OutboundPacket
from gateway.metrics import GatewayMetrics

SIO_EVENT_PREFIX: Final = "2"
"""Socket.IO EVENT on the default namespace; Engine.IO adds the MESSAGE type `4`."""


def event_packet(args_json: bytes) -> Any:
    """An Engine.IO packet for `42<args>`, encoded now so every recipient shares it."""
    pkt = eio_packet.Packet(eio_packet.MESSAGE, data=SIO_EVENT_PREFIX + args_json.decode())
    pkt.encode()
    return pkt


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
