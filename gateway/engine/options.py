"""What the engine runs with: the engine slice of the gateway's settings, resolved.

Every value that is an option is declared once, in gateway/settings.py
(`EngineSettings`); the defaults here are read from there, so a test can build an
engine with a few values changed and the rest as the gateway would run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.settings import EngineSettings, GatewaySettings, ListenSettings
from gateway.trust_proxy import NO_PROXY, ProxyTrust

ANY_ORIGIN: Final = "*"
_DEFAULT: Final = EngineSettings()
_LISTEN: Final = ListenSettings()


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOptions:
    ping_interval_s: float = _DEFAULT.ping_interval_s
    ping_timeout_s: float = _DEFAULT.ping_timeout_s
    max_payload_bytes: int = _DEFAULT.max_payload_bytes
    """Largest inbound websocket message or polling POST body."""
    transports: tuple[str, ...] = _DEFAULT.transports
    """Engine.IO transports accepted; a request for another is refused (code 0)."""
    max_queued_messages: int = _DEFAULT.max_queued_messages
    """Bound on packets waiting for a poll or an upgrade (per connection)."""
    max_buffered_bytes: int = _DEFAULT.max_buffered_bytes
    """Bound on bytes waiting to be written to the client (per connection)."""
    max_attachments: int = _DEFAULT.max_attachments
    """Most binary attachments one inbound packet may announce."""
    max_attachment_bytes: int = _DEFAULT.max_attachment_bytes
    """Bound on inbound attachment bytes buffered per connection."""
    max_sessions: int = 0
    """Engine.IO sessions open at once, half-open ones included (0: no limit)."""
    max_sessions_per_ip: int = _LISTEN.max_connections_per_ip
    """Engine.IO sessions one client IP may hold (0: no limit)."""
    trust: ProxyTrust = NO_PROXY
    """Which proxies decide a client's IP (--trust-proxy)."""
    handshake_timeout_s: float = _LISTEN.handshake_timeout_s
    """How long a session may stay without a Socket.IO CONNECT."""
    max_header_bytes: int = _LISTEN.max_header_bytes
    """Request line and headers of one request; more is answered 431."""
    allowed_origins: tuple[str, ...] | None = None
    """Exact Origins allowed; None: the host the request was sent to; ("*",): any."""
    refused_close_grace_s: float = 1.0
    """How long a refused client keeps its transport to read the connect error."""
    close_wait_s: float = 0.5
    """How long closing a websocket may wait for the client's close frame's reply."""
    path: str = "/socket.io/"

    @classmethod
    def of(cls, settings: GatewaySettings) -> EngineOptions:
        """The engine's options from a gateway's settings: its slice, and the Origins it
        accepts (Sails' exact --only-allow-origins list wins over --allowed-origins;
        neither: the host the request was sent to)."""
        engine = settings.engine
        origins: tuple[str, ...] | None = None
        if settings.connect.only_allow_origins:
            origins = tuple(settings.connect.only_allow_origins)
        elif ANY_ORIGIN in engine.allowed_origins:
            origins = (ANY_ORIGIN,)
        elif engine.allowed_origins:
            origins = tuple(engine.allowed_origins)
        listen = settings.listen
        sessions = 0
        if listen.max_connections:
            sessions = listen.max_connections + listen.max_pending_connections
        return cls(
            max_attachments=engine.max_attachments,
            max_attachment_bytes=engine.max_attachment_bytes,
            max_sessions=sessions,
            max_sessions_per_ip=listen.max_connections_per_ip,
            trust=ProxyTrust.parse(settings.connect.trust_proxy),
            handshake_timeout_s=listen.handshake_timeout_s,
            max_header_bytes=listen.max_header_bytes,
            ping_interval_s=engine.ping_interval_s,
            ping_timeout_s=engine.ping_timeout_s,
            max_payload_bytes=engine.max_payload_bytes,
            transports=engine.transports,
            max_queued_messages=engine.max_queued_messages,
            max_buffered_bytes=engine.max_buffered_bytes,
            allowed_origins=origins,
        )
