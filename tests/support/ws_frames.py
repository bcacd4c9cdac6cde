"""Websocket frames as a client writes them (RFC 6455 §5.2), valid or not: the fault
tests' raw client sends them over a socket, the engine's unit tests feed them to its
reader. No I/O."""

from __future__ import annotations

import os
import struct
from typing import Final

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA


def xor_mask(data: bytes, mask: bytes) -> bytes:
    """`data` XOR the repeated 4-byte `mask` (masking and unmasking are the same)."""
    if not data:
        return data
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    """One frame: masked with a random key (as clients must) unless told otherwise."""
    first = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + xor_mask(payload, mask)
