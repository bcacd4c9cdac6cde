"""The Origin check and CORS headers of the Engine.IO endpoint.

python-engineio's rules, kept: a request without an Origin header is not a
browser's and passes; otherwise the Origin must be in the exact configured list
(`--only-allow-origins`, as Sails, or `--allowed-origins`), or, when none is
configured, be the host the request was sent to (`Host`, and
`X-Forwarded-Proto`/`-Host` when a proxy sets them). A refused Origin is answered
400 before any session exists, and counted (`connect_rejections{reason="origin"}`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from gateway.engine.options import ANY_ORIGIN

log = logging.getLogger(__name__)


class OriginCheck:
    __slots__ = ("_allowed", "_any", "on_refused")

    def __init__(self, allowed: Iterable[str] | None, on_refused: Callable[[], None]) -> None:
        self._any = allowed is not None and ANY_ORIGIN in allowed
        self._allowed = frozenset(allowed) if allowed is not None else None
        self.on_refused = on_refused

    def accepts(self, origin: str, headers: Mapping[str, str], scheme: str) -> bool:
        if self._any:
            return True
        allowed = self._allowed if self._allowed is not None else same_host(headers, scheme)
        return origin in allowed

    def refuse(self, origin: str, remote: str) -> None:
        self.on_refused()
        log.info(
            "refused origin: not an accepted origin",
            extra={"origin": origin[:200], "remote": remote},
        )


def same_host(headers: Mapping[str, str], scheme: str) -> set[str]:
    """The origins accepted when none are configured."""
    host = headers.get("host")
    if not host:
        return set()
    out = {f"{scheme}://{host}"}
    if "x-forwarded-proto" in headers or "x-forwarded-host" in headers:
        proto = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        forwarded = headers.get("x-forwarded-host", host).split(",")[0].strip()
        out.add(f"{proto}://{forwarded}")
    return out


def cors_headers(origin: str | None, method: str, request_headers: str | None) -> dict[str, str]:
    """The CORS answer for an accepted (or absent) Origin, credentials allowed."""
    out: dict[str, str] = {}
    if origin:
        out["Access-Control-Allow-Origin"] = origin
        out["Access-Control-Allow-Credentials"] = "true"
    if method == "OPTIONS":
        out["Access-Control-Allow-Methods"] = "OPTIONS, GET, POST"
    if request_headers:
        out["Access-Control-Allow-Headers"] = request_headers
    return out
