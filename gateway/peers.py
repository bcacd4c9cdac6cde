"""Which gateways are alive, learnt from heartbeats on `<prefix>.gw.hb`.

Cluster-wide membership operations must return only when every gateway has applied
them; a gateway answers such a request with the peers it knows, so a publisher knows
whose answers to wait for without keeping any state of its own (the same scheme as
socket.io's ClusterAdapterWithHeartbeat).
"""

from __future__ import annotations

import time
from typing import Any

import orjson


class Peers:
    def __init__(self, self_id: str, interval_s: float) -> None:
        self.self_id = self_id
        self._ttl_s = interval_s * 3
        self._seen: dict[str, float] = {}

    def beat(self, hello: bool = False, down: bool = False) -> bytes:
        msg: dict[str, Any] = {"id": self.self_id}
        if hello:
            msg["hello"] = True
        if down:
            msg["down"] = True
        return orjson.dumps(msg)

    def observe(self, data: bytes) -> bool:
        """Record a heartbeat; True when the sender asks everyone to answer at once."""
        msg = orjson.loads(data)
        peer = msg.get("id") if isinstance(msg, dict) else None
        if not isinstance(peer, str) or peer == self.self_id:
            return False
        if msg.get("down"):
            self._seen.pop(peer, None)
            return False
        self._seen[peer] = time.monotonic()
        return bool(msg.get("hello"))

    def alive(self) -> list[str]:
        now = time.monotonic()
        dead = [p for p, t in self._seen.items() if now - t > self._ttl_s]
        for p in dead:
            del self._seen[p]
        return sorted([self.self_id, *self._seen])
