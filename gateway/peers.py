"""Which gateways are alive, learnt from heartbeats on `<prefix>.gw.hb`.

Cluster-wide membership operations must return only when every gateway has applied
them; a gateway answers such a request with the peers it knows, so a publisher knows
whose answers to wait for without keeping any state of its own (the same scheme as
socket.io's ClusterAdapterWithHeartbeat). The heartbeat itself is
`shared.control.Heartbeat`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.control import Heartbeat, decode_heartbeat, encode_heartbeat


class Peers:
    def __init__(
        self, self_id: str, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.self_id = self_id
        self._ttl_s = interval_s * 3
        self._clock = clock
        self._seen: dict[str, float] = {}
        self.on_gone: Callable[[str], None] | None = None
        """Told a peer's id when it said `down` or its heartbeats stopped (the room
        directory purges its entries)."""

    def beat(self, hello: bool = False, down: bool = False) -> bytes:
        return encode_heartbeat(Heartbeat(self.self_id, hello=hello, down=down))

    def observe(self, data: bytes) -> bool:
        """Record a heartbeat; True when the sender asks everyone to answer at once.
        Raises MalformedEnvelope (a ValueError) for a body that is not JSON."""
        beat = decode_heartbeat(data)
        if beat is None or beat.id == self.self_id:
            return False
        if beat.down:
            if self._seen.pop(beat.id, None) is not None and self.on_gone is not None:
                self.on_gone(beat.id)
            return False
        self._seen[beat.id] = self._clock()
        return beat.hello

    def alive(self) -> list[str]:
        now = self._clock()
        dead = [p for p, t in self._seen.items() if now - t > self._ttl_s]
        for p in dead:
            del self._seen[p]
            if self.on_gone is not None:
                self.on_gone(p)
        return sorted([self.self_id, *self._seen])
