"""Who may open an Engine.IO session: the session bounds checked at the handshake.

Why here and not at the Socket.IO CONNECT: a client that opens a websocket (or a
polling session) and never sends CONNECT holds a socket, a file descriptor and a
session as surely as a connected one. So every session counts from its handshake:

* `max_sessions` (--max-connections + --max-pending-connections): sessions open at
  once, connected or still in their handshake; over it the handshake is answered 503.
  The gateway's own CONNECT-time check of --max-connections stays (its clients get a
  connect error they can act on); this bound only keeps the half-open ones small.
* `max_sessions_per_ip` (--max-connections-per-ip): sessions of one client IP, the IP
  being what --trust-proxy makes of the peer and X-Forwarded-For; over it, 429.

A session that sends no CONNECT within --handshake-timeout-s is closed
(connection.py), so a half-open session is short-lived as well as bounded.
"""

from __future__ import annotations

from typing import Final

from gateway.engine.options import EngineOptions

MAX_SESSIONS: Final = "max_connections"
"""refusals_total reason: the handshake of a session over --max-connections + pending."""
MAX_PER_IP: Final = "max_connections_per_ip"
"""refusals_total reason: the handshake of a session over --max-connections-per-ip."""


class Admission:
    """Open sessions, in total and per client IP; one dict entry per IP with a session."""

    __slots__ = ("_max_per_ip", "_max_sessions", "_per_ip", "_trust")

    def __init__(self, options: EngineOptions) -> None:
        self._max_sessions = options.max_sessions
        self._max_per_ip = options.max_sessions_per_ip
        self._trust = options.trust
        self._per_ip: dict[str, int] = {}

    @property
    def per_ip(self) -> bool:
        """Whether sessions are counted per IP at all (nothing is kept per IP when not)."""
        return self._max_per_ip > 0

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address as --trust-proxy resolves it (the peer when none)."""
        return self._trust.resolve(peer, forwarded_for)[0]

    def refusal(self, ip: str, open_sessions: int) -> str | None:
        """Why a new session of `ip` may not open now (a refusals_total reason), or None."""
        if self._max_sessions and open_sessions >= self._max_sessions:
            return MAX_SESSIONS
        if self._max_per_ip and self._per_ip.get(ip, 0) >= self._max_per_ip:
            return MAX_PER_IP
        return None

    def opened(self, ip: str) -> None:
        if self._max_per_ip:
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1

    def closed(self, ip: str) -> None:
        if not self._max_per_ip:
            return
        left = self._per_ip.get(ip, 0) - 1
        if left > 0:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)

    def sessions_of(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)
