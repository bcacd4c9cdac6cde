"""NATS message headers as raw bytes: the block a header-carrying message brings
(`NATS/1.0[ status]\r\nName: value\r\n…\r\n\r\n`), built for MemoryBroker's publish and
read by name for the few consumers that need one value.

The broker hands the block over unparsed (gateway.broker.Handler): the only headers the
gateway reads on its data path are the history stream's two positions, and finding two
names in a short block is cheaper than building nats-py's dict for every message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

HEADER_LINE: Final = b"NATS/1.0"
_CRLF: Final = b"\r\n"


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The raw block nats-server would deliver for these headers (what HPUB carries)."""
    lines = [HEADER_LINE]
    for name, value in headers.items():
        if not name or any(c in name for c in ":\r\n ") or any(c in value for c in "\r\n"):
            raise ValueError(f"invalid NATS header {name!r}: {value[:40]!r}")
        lines.append(f"{name}: {value}".encode())
    return _CRLF.join(lines) + _CRLF + _CRLF


def header_value(block: bytes, name: bytes) -> bytes | None:
    """The value of header `name` (exact case first, as nats-server writes its own
    headers, then case-insensitively), stripped; None when absent."""
    key = _CRLF + name + b":"
    at = block.find(key)
    if at < 0:
        lower = block.lower()
        at = lower.find(key.lower())
        if at < 0:
            return None
    start = at + len(key)
    end = block.find(_CRLF, start)
    return block[start : end if end >= 0 else len(block)].strip()


def header_int(block: bytes, name: bytes) -> int | None:
    """An integer header (a sequence number); None when absent or not a number."""
    raw = header_value(block, name)
    if raw is None or not raw.isdigit():
        return None
    return int(raw)


__all__ = ["HEADER_LINE", "encode_headers", "header_int", "header_value"]
