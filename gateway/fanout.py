"""Hand one pre-encoded packet to many local sockets.

The packet is built and encoded once per message; each recipient costs one bounded
queue append on its Engine.IO socket (no task, no JSON work). A socket whose queue is
full has stopped reading: it is cut off with a distinct reason instead of growing
memory. This is the only module that touches Engine.IO socket internals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    def __init__(
        self,
        metrics: GatewayMetrics,
        max_queued: int,
        on_slow: Callable[[str], None],
    ) -> None:
        self._eio: dict[str, Any] = {}
        self._metrics = metrics
        self._max_queued = max_queued
        self._on_slow = on_slow

    def attach(self, sid: str, eio_socket: Any) -> None:
        self._eio[sid] = eio_socket

    def detach(self, sid: str) -> None:
        self._eio.pop(sid, None)

    def deliver(self, pkt: Any, sids: Iterable[str], omit: frozenset[str] = frozenset()) -> int:
        sockets = self._eio
        limit = self._max_queued
        sent = 0
        for sid in sids:
            if sid in omit:
                continue
            sock = sockets.get(sid)
            if sock is None or sock.closing or sock.closed:
                continue
            queue = sock.queue
            if queue.qsize() >= limit:
                self._metrics.drops.labels("slow_client").inc()
                self._on_slow(sid)
                continue
            queue.put_nowait(pkt)
            sent += 1
        self._metrics.deliveries.inc(sent)
        return sent
