"""The floor reference's websocket helpers (bench/systems/floor_server.py): the upgrade
answer of RFC 6455, frames the bench's client parses, and unmasking of client frames."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.loadgen import _client_frame
from bench.systems import floor_server as fs

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
REQUEST = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
    b"Sec-WebSocket-Version: 13"
)


def test_accept_key_is_the_rfc_6455_example() -> None:
    assert fs.accept_key(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3


@given(st.binary(min_size=16, max_size=16))
def test_accept_key_is_sha1_of_key_and_guid(raw: bytes) -> None:
    key = base64.b64encode(raw)
    want = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert fs.accept_key(key) == want


def test_upgrade_key_accepts_the_load_generators_request() -> None:
    assert fs.upgrade_key(REQUEST) == KEY
    assert fs.upgrade_key(REQUEST.replace(b"Sec-WebSocket-Key", b"sec-websocket-KEY")) == KEY


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"GET ", b"POST "),
        (b"EIO=4", b"EIO=3"),
        (b"transport=websocket", b"transport=polling"),
        (b"/socket.io/", b"/other/"),
        (b"Upgrade: websocket", b"Upgrade: h2c"),
        (b"Version: 13", b"Version: 8"),
        (b"Sec-WebSocket-Key: " + KEY, b"X-Nothing: 1"),
    ],
)
def test_upgrade_key_refuses_anything_else(old: bytes, new: bytes) -> None:
    assert fs.upgrade_key(REQUEST.replace(old, new)) is None


@pytest.mark.parametrize("n", [0, 1, 125, 126, 200, 65535, 65536, 70000])
def test_server_frame_header_lengths(n: int) -> None:
    payload = b"x" * n
    frame = fs.server_frame(payload)
    assert frame[0] == 0x81  # FIN, text, never masked
    assert frame.endswith(payload)
    header = frame[: len(frame) - n]
    if n < 126:
        assert header == bytes((0x81, n))
    elif n < 65536:
        assert header == bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        assert header == bytes((0x81, 127)) + n.to_bytes(8, "big")


@given(st.binary(max_size=300))
def test_unmask_undoes_a_clients_masking(payload: bytes) -> None:
    frame = _client_frame(0x1, payload)
    head = 2 if len(payload) < 126 else 4
    mask, masked = frame[head : head + 4], frame[head + 4 :]
    assert fs.unmask(masked, mask) == payload


def test_open_frame_is_an_engine_io_open_packet_with_a_fresh_sid() -> None:
    a, b = fs.open_frame(), fs.open_frame()
    packet = a[2:]
    assert packet[:1] == b"0"
    opening = orjson.loads(packet[1:])
    assert opening["pingInterval"] == 25_000
    assert opening["upgrades"] == []
    assert isinstance(opening["sid"], str)
    assert orjson.loads(b[3:])["sid"] != opening["sid"]
