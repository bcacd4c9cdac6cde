"""Hand one pre-encoded packet to many local sockets.

The packet is built and encoded once per message; each recipient costs one call on its
socket's OutboundQueue (outbound.py), which writes the shared frame to the wire or
queues it, within the socket's bounds. No task and no JSON work per recipient.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from engineio import packet as eio_packet

from gateway.metrics import GatewayMetrics

SIO_EVENT_PREFIX: Final = "2"
"""Socket.IO EVENT on the default namespace; Engine.IO adds the MESSAGE type `4`."""


def event_packet(args_json: bytes) -> Any:
    """An Engine.IO packet for `42<args>`, encoded now so every recipient shares it."""
    pkt = eio_packet.Packet(eio_packet.MESSAGE, data=SIO_EVENT_PREFIX + args_json.decode())
    pkt.encode()
    return pkt


class Fanout:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._eio: dict[str, Any] = {}
        self._count = metrics.deliveries.inc

    def attach(self, sid: str, eio_socket: Any) -> None:
        self._eio[sid] = eio_socket

    def detach(self, sid: str) -> Any:
        """Forget the socket; returns its Engine.IO socket if it was attached."""
        return self._eio.pop(sid, None)

    def deliver(self, pkt: Any, sids: Iterable[str], omit: frozenset[str] = frozenset()) -> int:
        """Queue (or write, see outbound.py) one shared packet for each recipient; the
        socket's own queue enforces its bounds."""
        sockets = self._eio
        sent = 0
        for sid in sids:
            if sid in omit:
                continue
            sock = sockets.get(sid)
            if sock is None or sock.closing or sock.closed:
                continue
            sock.queue.put_nowait(pkt)
            sent += 1
        self._count(sent)
        return sent
