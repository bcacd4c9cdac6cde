"""Outbound packets built once: the fanout's shared event and its websocket frame.

A fanout message becomes one `EventPacket`: the Engine.IO text `42<args>` and the
websocket frame carrying it, built once and shared by every recipient. The frame is
the same for Engine.IO v3 and v4 (a text MESSAGE is `4` + the Socket.IO packet in
both), so one frame serves every websocket client; polling clients take the text.
Server frames are unmasked and uncompressed (we decline permessage-deflate).
"""

from __future__ import annotations

import struct
from typing import Final

TEXT: Final = 0x81
"""FIN + text opcode."""
BINARY: Final = 0x82
"""FIN + binary opcode."""
EVENT_PREFIX: Final = "42"
"""Engine.IO MESSAGE (`4`) + Socket.IO EVENT (`2`) on the default namespace."""


def ws_frame(payload: bytes, first_byte: int = TEXT) -> bytes:
    """An unmasked, final, uncompressed websocket data frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first_byte, n)
    elif n < 65536:
        header = struct.pack("!BBH", first_byte, 126, n)
    else:
        header = struct.pack("!BBQ", first_byte, 127, n)
    return header + payload


class EventPacket:
    """A Socket.IO EVENT for many recipients (an `api.OutboundPacket`)."""

    __slots__ = ("frame", "text")

    def __init__(self, text: str, frame: bytes) -> None:
        self.text = text
        """The Engine.IO packet as polling payloads carry it: `42[...]`."""
        self.frame = frame
        """The websocket frame carrying `text`, for every websocket recipient."""

    def __len__(self) -> int:
        return len(self.frame)


def event_packet(args_json: bytes) -> EventPacket:
    """`42<args>` for the fanout, framed now so every recipient shares the bytes."""
    body = b"42" + args_json
    return EventPacket(body.decode(), ws_frame(body))


def text_frame(text: str) -> bytes:
    """The websocket frame of one Engine.IO text packet (control packets, acks)."""
    return ws_frame(text.encode())
