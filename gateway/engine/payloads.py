"""Polling payloads of Engine.IO v4 and v3 (pure functions, no I/O).

A packet here is a `str` (an Engine.IO text packet, type digit first: `42[...]`,
`2`, `3probe`) or `bytes` (a binary MESSAGE's payload).

* v4: packets joined by the record separator `\\x1e`; binary ones as `b<base64>`.
* v3: `<length>:<packet>...`, lengths in UTF-16 code units as JavaScript counts them;
  binary packets base64 as `b4...`, or the XHR2 binary form
  (`<0 text|1 binary><length digits as bytes>\\xff<packet>...`) for clients that can
  take it (no `b64=1`); JSONP `d=` posts are unescaped as engine.io 3 does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Final

Packet = str | bytes

MAX_PAYLOAD_PACKETS: Final = 1000
"""Most packets accepted in one polling POST (the body size is capped anyway)."""
SEPARATOR: Final = "\x1e"
MESSAGE_TYPE_BYTE: Final = b"\x04"
PACKET_TYPE_CHARS: Final = frozenset("0123456")
_ASTRAL: Final = re.compile("[\U00010000-\U0010ffff]")
_JSONP_NEWLINE: Final = re.compile(r"(\\)?\\n")
_JSONP_ESCAPED_NEWLINE: Final = re.compile(r"\\\\n")

TEXT_TYPE: Final = "text/plain; charset=UTF-8"
BINARY_TYPE: Final = "application/octet-stream"
SCRIPT_TYPE: Final = "text/javascript; charset=UTF-8"


def _jsonp(index: int, payload: str) -> bytes:
    return f"___eio[{index}]({json.dumps(payload)});".encode()


def _check_text(text: str) -> str:
    if text[:1] not in PACKET_TYPE_CHARS:
        raise ValueError(f"invalid packet {text[:16]!r}")
    return text


# --- v4 ------------------------------------------------------------------------------


def encode_v4(packets: Iterable[Packet]) -> str:
    return SEPARATOR.join(
        "b" + base64.b64encode(p).decode("ascii") if isinstance(p, bytes) else p for p in packets
    )


def encode_v4_response(packets: list[Packet], jsonp_index: int | None) -> tuple[bytes, str]:
    if jsonp_index is not None:
        return _jsonp(jsonp_index, encode_v4(packets)), SCRIPT_TYPE
    return encode_v4(packets).encode(), TEXT_TYPE


def decode_v4(body: bytes) -> list[Packet]:
    text = body.decode("utf-8")
    if text.startswith("d="):
        text = unescape_jsonp_post(text)
    out: list[Packet] = []
    if not text:
        return out
    for part in text.split(SEPARATOR):
        if part[:1] == "b":
            try:
                out.append(base64.b64decode(part[1:]))
            except binascii.Error as exc:
                raise ValueError("invalid base64 packet") from exc
        else:
            out.append(_check_text(part))
        if len(out) > MAX_PAYLOAD_PACKETS:
            raise ValueError("too many packets in payload")
    return out


# --- v3 ------------------------------------------------------------------------------


def _utf16_len(text: str) -> int:
    """Length as JavaScript counts it (`String.length`), which v3 payloads use."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def _v3_text(pkt: Packet) -> str:
    if isinstance(pkt, bytes):
        return "b4" + base64.b64encode(pkt).decode("ascii")
    return pkt


def encode_text_payload(packets: Iterable[Packet]) -> str:
    """`<length>:<packet>...`; binary packets base64 as `b4...`; none is `0:`."""
    parts = []
    for pkt in packets:
        text = _v3_text(pkt)
        parts.append(f"{_utf16_len(text)}:{text}")
    return "".join(parts) or "0:"


def encode_binary_payload(packets: Iterable[Packet]) -> bytes:
    """XHR2 form: `<0 text|1 binary><length digits as bytes>\\xff<packet>...`."""
    out = bytearray()
    for pkt in packets:
        if isinstance(pkt, bytes):
            kind, body = 1, MESSAGE_TYPE_BYTE + pkt
        else:
            kind, body = 0, pkt.encode("utf-8")
        out.append(kind)
        out += bytes(int(digit) for digit in str(len(body)))
        out.append(0xFF)
        out += body
    return bytes(out)


def encode_v3_response(
    packets: list[Packet], *, binary: bool, jsonp_index: int | None = None
) -> tuple[bytes, str]:
    """Body and content type of a v3 polling GET response."""
    if jsonp_index is not None:
        return _jsonp(jsonp_index, encode_text_payload(packets)), SCRIPT_TYPE
    if binary and any(isinstance(p, bytes) for p in packets):
        return encode_binary_payload(packets), BINARY_TYPE
    return encode_text_payload(packets).encode("utf-8"), TEXT_TYPE


def decode_v3_text(text: str) -> Packet:
    """One v3 text packet; `b4<base64>` is a binary MESSAGE."""
    if text[:1] == "b":
        if text[1:2] != "4":
            raise ValueError(f"base64 packet of type {text[1:2]!r}")
        try:
            return base64.b64decode(text[2:])
        except binascii.Error as exc:
            raise ValueError("invalid base64 packet") from exc
    return _check_text(text)


def _utf16_end(text: str, start: int, units: int) -> int:
    """Index in `text` `units` UTF-16 code units after `start`."""
    i = start
    while units > 0 and i < len(text):
        units -= 2 if ord(text[i]) > 0xFFFF else 1
        i += 1
    if units != 0:
        raise ValueError("packet length splits a character or runs past the payload")
    return i


def unescape_jsonp_post(body: str) -> str:
    """A JSONP post is `d=<payload>` with newlines sent as `\\n` (and `\\\\n`)."""
    data = urllib.parse.parse_qs(body, keep_blank_values=True).get("d", [""])[0]
    data = _JSONP_NEWLINE.sub(lambda m: m.group(0) if m.group(1) else "\n", data)
    return _JSONP_ESCAPED_NEWLINE.sub(lambda m: "\\n", data)


def decode_text_payload(body: bytes | str) -> list[Packet]:
    """Packets of a v3 `<length>:<packet>...` payload (or a JSONP `d=` post)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if text.startswith("d="):
        text = unescape_jsonp_post(text)
    astral = _ASTRAL.search(text) is not None
    packets: list[Packet] = []
    i = 0
    while i < len(text):
        colon = text.find(":", i)
        digits = text[i:colon] if colon != -1 else ""
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 10:
            raise ValueError(f"invalid payload length at offset {i}")
        start = colon + 1
        units = int(digits)
        end = _utf16_end(text, start, units) if astral else start + units
        if end > len(text):
            raise ValueError("packet length runs past the payload")
        if end > start:
            packets.append(decode_v3_text(text[start:end]))
            if len(packets) > MAX_PAYLOAD_PACKETS:
                raise ValueError("too many packets in payload")
        i = end
    return packets


def decode_binary_payload(body: bytes) -> list[Packet]:
    """Packets of a v3 XHR2 binary payload."""
    packets: list[Packet] = []
    i = 0
    while i < len(body):
        kind = body[i]
        sep = body.find(b"\xff", i + 1)
        digits = body[i + 1 : sep] if sep != -1 else b""
        if kind not in (0, 1) or not digits or len(digits) > 10 or max(digits) > 9:
            raise ValueError(f"invalid binary payload header at offset {i}")
        start = sep + 1
        end = start + int("".join(str(d) for d in digits))
        if end > len(body):
            raise ValueError("packet length runs past the payload")
        chunk = body[start:end]
        if kind == 0:
            packets.append(decode_v3_text(chunk.decode("utf-8")))
        elif chunk[:1] == MESSAGE_TYPE_BYTE:
            packets.append(chunk[1:])
        else:
            raise ValueError("binary packet that is not a message")
        if len(packets) > MAX_PAYLOAD_PACKETS:
            raise ValueError("too many packets in payload")
        i = end
    return packets
