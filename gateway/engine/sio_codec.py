"""Socket.IO packets (protocol 4/5 for socket.io-client 3+, protocol 4 "v2" for
socket.io-client 2), decoded and encoded here with orjson.

Why our own codec rather than `socketio.packet.Packet`: the grammar is a dozen lines
(`<type>[<attachments>-][/<nsp>,][<id>][<json>]`), the server only ever builds four
kinds of packet, and python-socketio's codec would have to be given orjson and
guarded against deep nesting anyway. orjson refuses nesting deeper than 1024 with a
`JSONDecodeError` (a `ValueError`), never a `RecursionError`; placeholders are put
back without recursion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

CONNECT: Final = 0
DISCONNECT: Final = 1
EVENT: Final = 2
ACK: Final = 3
CONNECT_ERROR: Final = 4
BINARY_EVENT: Final = 5
BINARY_ACK: Final = 6

MAX_ATTACHMENTS: Final = 10
"""Most binary attachments accepted on one inbound packet, unless the caller says
(the connection passes --max-attachments, whose default this is)."""
_MAX_COUNT_DIGITS: Final = 10


class TooManyAttachments(ValueError):
    """A binary packet announcing more attachments than allowed (a bound, not garbage:
    the connection counts it)."""


_MAX_ID_DIGITS: Final = 10
_PLACEHOLDER: Final = "_placeholder"


@dataclass(slots=True)
class SioPacket:
    type: int
    namespace: str = "/"
    id: int | None = None
    data: Any = None
    attachments: int = 0
    has_data: bool = False
    buffers: list[bytes] | None = None


def decode(text: str, max_attachments: int = MAX_ATTACHMENTS) -> SioPacket:
    """One Socket.IO packet (the Engine.IO MESSAGE's text); ValueError if malformed,
    TooManyAttachments (a ValueError) over `max_attachments`."""
    if not text or not "0" <= text[0] <= "6":
        raise ValueError(f"invalid Socket.IO packet type {text[:1]!r}")
    pkt = SioPacket(int(text[0]))
    i, n = 1, len(text)
    if pkt.type in (BINARY_EVENT, BINARY_ACK):
        dash = text.find("-", i)
        digits = text[i:dash] if dash != -1 else ""
        if not (digits.isascii() and digits.isdigit()) or len(digits) > _MAX_COUNT_DIGITS:
            raise ValueError("invalid attachment count")
        pkt.attachments = int(digits)
        if pkt.attachments > max_attachments:
            raise TooManyAttachments(f"{pkt.attachments} attachments announced")
        i = dash + 1
    if i < n and text[i] == "/":
        comma = text.find(",", i)
        end = comma if comma != -1 else n
        pkt.namespace = text[i:end]
        i = end + 1 if comma != -1 else n
    j = i
    while j < n and "0" <= text[j] <= "9" and j - i <= _MAX_ID_DIGITS:
        j += 1
    if j > i:
        if j - i > _MAX_ID_DIGITS:
            raise ValueError("invalid ack id")
        pkt.id = int(text[i:j])
    if j < n:
        pkt.data = orjson.loads(text[j:])
        pkt.has_data = True
    return pkt


def reconstruct(data: Any, buffers: list[bytes]) -> Any:
    """`data` with each `{"_placeholder": true, "num": n}` replaced by `buffers[n]`
    (iteratively: a deep payload cannot exhaust the stack)."""
    root = [data]
    stack: list[list[Any] | dict[str, Any]] = [root]
    while stack:
        node: Any = stack.pop()
        keys = range(len(node)) if isinstance(node, list) else list(node)
        for key in keys:
            value = node[key]
            if isinstance(value, dict):
                if value.get(_PLACEHOLDER) is True:
                    num = value.get("num")
                    if type(num) is not int or not 0 <= num < len(buffers):
                        raise ValueError("invalid attachment placeholder")
                    node[key] = buffers[num]
                else:
                    stack.append(value)
            elif isinstance(value, list):
                stack.append(value)
    return root[0]


def _deconstruct(data: Any, buffers: list[bytes]) -> Any:
    if isinstance(data, bytes | bytearray | memoryview):
        buffers.append(bytes(data))
        return {_PLACEHOLDER: True, "num": len(buffers) - 1}
    if isinstance(data, list | tuple):
        return [_deconstruct(v, buffers) for v in data]
    if isinstance(data, dict):
        return {k: _deconstruct(v, buffers) for k, v in data.items()}
    return data


def _has_binary(data: Any) -> bool:
    if isinstance(data, bytes | bytearray | memoryview):
        return True
    if isinstance(data, list | tuple):
        return any(_has_binary(v) for v in data)
    if isinstance(data, dict):
        return any(_has_binary(v) for v in data.values())
    return False


def encode_data(kind: int, args: list[Any], ack_id: int | None = None) -> list[str | bytes]:
    """An EVENT or ACK with `args`, as Engine.IO MESSAGE packets (text first, then any
    binary attachments): `42[...]`, `43<id>[...]`, `451-[...]` + one bytes packet."""
    suffix = "" if ack_id is None else str(ack_id)
    if not _has_binary(args):
        return [f"4{kind}{suffix}{orjson.dumps(args).decode()}"]
    buffers: list[bytes] = []
    body = orjson.dumps(_deconstruct(args, buffers)).decode()
    binary_kind = BINARY_EVENT if kind == EVENT else BINARY_ACK
    return [f"4{binary_kind}{len(buffers)}-{suffix}{body}", *buffers]


def connect_reply(protocol: int, payload: dict[str, Any] | None) -> str:
    """CONNECT: `40{"sid":...}` (v4: `payload` carries the socket id, and later the
    recovery `pid`), bare `40` for a v2 client."""
    if protocol == 3 or payload is None:
        return "40"
    return "40" + orjson.dumps(payload).decode()


def connect_error(protocol: int, message: str, namespace: str = "/") -> str:
    """CONNECT_ERROR: `44{"message":m}` (v4) or `44"m"` (v2 carries the reason itself)."""
    head = "44" if namespace == "/" else f"44{namespace},"
    if protocol == 3:
        return head + orjson.dumps(message).decode()
    return head + orjson.dumps({"message": message}).decode()


DISCONNECT_PACKET: Final = "41"
