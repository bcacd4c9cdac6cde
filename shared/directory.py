"""The room directory: which gateways hold members of a room, on JetStream.

Members and counts are asked only of the gateways holding a room. Each gateway keeps
one message per room it holds NATS interest in, on `<p>.dir.<room token>.<gateway id>`,
in a stream (`directory_stream`) keeping the last message of each subject: written when
its interest in the room starts, purged when it ends. A reader finds every holder of a
room in ONE Direct Get (`multi_last` on `holders_filter`), the gateway id being the
subject's last token (`gateway_of`). A socket's own-id room is not listed: its own
subject answers for it.

Pages of members are ordered by (gateway id, socket id); the cursor names the last
member handed out, so a member present for the whole paging is neither skipped nor
repeated, whatever joins or leaves between pages. The gateway and the publisher both
take their names from here (docs/protocol.md, "Room directory").
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

import orjson

from shared.errors import UsageError
from shared.subjects import check_gateway_id, room_token

_NAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
CURSOR_VERSION: Final = 1


class InvalidCursor(UsageError):
    """A cursor this module did not make (or made for another room)."""


def directory_stream(prefix: str) -> str:
    """The directory stream of a deployment prefix (stream names allow no dots)."""
    return f"sailcast_directory_{_NAME_UNSAFE.sub('_', prefix)}"


def directory_subjects(prefix: str) -> str:
    """What the directory stream captures."""
    return f"{prefix}.dir.>"


def entry_subject(prefix: str, room: str, gateway_id: str) -> str:
    """The one entry of `gateway_id` holding `room`."""
    return f"{prefix}.dir.{room_token(room)}.{check_gateway_id(gateway_id)}"


def holders_filter(prefix: str, room: str) -> str:
    """Every holder's entry for `room` (the `multi_last` filter of one read)."""
    return f"{prefix}.dir.{room_token(room)}.*"


def gateway_filter(prefix: str, gateway_id: str) -> str:
    """Every entry of one gateway (purged when it is found dead, or at its start)."""
    return f"{prefix}.dir.*.{check_gateway_id(gateway_id)}"


def gateway_of(subject: str) -> str | None:
    """The gateway id an entry subject names (its last token); None for junk."""
    head, _, gw = subject.rpartition(".")
    if not head or not gw or _NAME_UNSAFE.search(gw) or len(gw) > 64:
        return None
    return gw


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a page stopped: the last member handed out, in (gateway, socket) order."""

    gateway_id: str
    socket_id: str


def encode_cursor(position: Position) -> str:
    """Opaque to callers: base64url of `[1, gateway id, socket id]`."""
    raw = orjson.dumps([CURSOR_VERSION, position.gateway_id, position.socket_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> Position:
    """Invert `encode_cursor`; InvalidCursor for anything it cannot have made."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > 2048:
        raise InvalidCursor(f"not a members cursor: {str(cursor)[:80]!r}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidCursor(f"not a members cursor: {cursor[:80]!r}") from None
    if (
        not isinstance(value, list)
        or len(value) != 3
        or value[0] != CURSOR_VERSION
        or not all(isinstance(v, str) and v for v in value[1:])
    ):
        raise InvalidCursor(f"not a members cursor: {cursor[:80]!r}")
    return Position(value[1], value[2])


__all__ = [
    "InvalidCursor",
    "Position",
    "decode_cursor",
    "directory_stream",
    "directory_subjects",
    "encode_cursor",
    "entry_subject",
    "gateway_filter",
    "gateway_of",
    "holders_filter",
]
