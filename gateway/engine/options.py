"""What the engine is configured with (the slice of the gateway's settings it needs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ANY_ORIGIN: Final = "*"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOptions:
    ping_interval_s: float = 25.0
    ping_timeout_s: float = 20.0
    max_payload_bytes: int = 1_000_000
    """Largest inbound websocket message or polling POST body."""
    max_queued_messages: int = 1000
    """Bound on packets waiting for a poll or an upgrade (per connection)."""
    max_buffered_bytes: int = 1 << 20
    """Bound on bytes waiting to be written to the client (per connection)."""
    allowed_origins: tuple[str, ...] | None = None
    """Exact Origins allowed; None: the host the request was sent to; ("*",): any."""
    refused_close_grace_s: float = 1.0
    """How long a refused client keeps its transport to read the connect error."""
    close_wait_s: float = 0.5
    """How long closing a websocket may wait for the client's close frame's reply."""
    path: str = "/socket.io/"
