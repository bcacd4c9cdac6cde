"""Inbound refusals seen inside python-engineio, which has no hook for them.

The Engine.IO server instance carries the handler (`sio.SocketServer.on_refusal` sets
it; gateway/app.py counts it in `refusals_total{reason}`); the transport code that
refuses something (outbound.py's websocket reader, eio3.py and eio4.py for polling
POSTs, sio.py for reserved event names) calls `count`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

INBOUND_TOO_LARGE: Final = "inbound_too_large"
"""A websocket message or polling POST over --max-payload-bytes."""

_HANDLER_ATTR: Final = "_sailcast_on_refusal"


def set_handler(eio_server: Any, handler: Callable[[str], None]) -> None:
    setattr(eio_server, _HANDLER_ATTR, handler)


def count(eio_server: Any, reason: str) -> None:
    handler: Callable[[str], None] | None = getattr(eio_server, _HANDLER_ATTR, None)
    if handler is not None:
        handler(reason)


def post_too_large(eio_server: Any, environ: Mapping[str, Any]) -> bool:
    """Whether a polling POST is over the limit, which python-engineio then refuses
    (400, and the session is closed); counted here, since it does so silently."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False  # python-engineio's own parsing fails on it: not a size refusal
    if length > eio_server.max_http_buffer_size:
        count(eio_server, INBOUND_TOO_LARGE)
        return True
    return False
