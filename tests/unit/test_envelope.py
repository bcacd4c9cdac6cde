"""The wire envelope: round trips, caller errors before sending, fuzzed input."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.envelope import (
    KIND_BLAST,
    KIND_BROADCAST,
    KIND_MULTI_ROOM,
    decode_data,
    decode_reply,
    decode_request,
    encode_args,
    encode_data,
    encode_request,
)
from shared.errors import MalformedEnvelope, NotSerializable, PayloadTooLarge, UsageError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.text(min_size=1, max_size=30).filter(lambda e: e not in {"connect", "disconnect"}),
    json_values,
    st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=4),
    st.lists(st.text(min_size=1, max_size=10), max_size=3),
)
def test_round_trip(event: str, data: Any, rooms: list[str], omit: list[str]) -> None:
    body = encode_data(KIND_BROADCAST, encode_args(event, data), ts=1.5, rooms=rooms, omit=omit)
    msg = decode_data(body)
    assert msg.kind == KIND_BROADCAST
    assert msg.rooms == tuple(rooms)
    assert msg.omit == frozenset(omit)
    assert msg.ts == 1.5
    assert orjson.loads(msg.args) == [event, data]


@given(
    st.text(min_size=1, max_size=30).filter(lambda e: e not in {"connect", "disconnect"}),
    json_values,
    st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=40, unique=True),
    st.lists(st.text(min_size=1, max_size=10), max_size=3),
)
def test_multi_room_round_trip(event: str, data: Any, rooms: list[str], omit: list[str]) -> None:
    """The multi-room form carries the room list once, in the caller's order."""
    body = encode_data(KIND_MULTI_ROOM, encode_args(event, data), ts=2.5, rooms=rooms, omit=omit)
    msg = decode_data(body)
    assert msg.kind == KIND_MULTI_ROOM
    assert msg.rooms == tuple(rooms)
    assert msg.omit == frozenset(omit)
    assert msg.ts == 2.5
    assert orjson.loads(msg.args) == [event, data]


def test_args_are_the_socketio_event_array_verbatim() -> None:
    body = encode_data(KIND_BLAST, encode_args("chat", {"b": 1, "a": 2}), ts=0)
    assert body.split(b"\n", 1)[1] == b'["chat",{"b":1,"a":2}]'


def test_ts_is_optional_for_hand_written_publishers() -> None:
    msg = decode_data(b'{"v":1,"k":"bl"}\n["chat",1]')
    assert msg.ts is None
    with pytest.raises(MalformedEnvelope, match="ts a number"):
        decode_data(b'{"v":1,"k":"bl","ts":"now"}\n["chat",1]')


def test_non_serializable_data_names_the_event() -> None:
    with pytest.raises(NotSerializable, match="'chat'"):
        encode_args("chat", {"x": object()})
    with pytest.raises(NotSerializable):
        encode_args("chat", {1j: 1})


@pytest.mark.parametrize("event", ["", "connect", "disconnect", "connect_error", 5])
def test_bad_event_names(event: Any) -> None:
    with pytest.raises(UsageError):
        encode_args(event, None)


def test_payload_limit_is_checked_before_sending() -> None:
    args = encode_args("big", "x" * 2000)
    with pytest.raises(PayloadTooLarge, match="1024"):
        encode_data(KIND_BLAST, args, ts=0, max_bytes=1024)


@given(st.binary(max_size=300))
def test_garbage_never_raises_anything_but_malformed(body: bytes) -> None:
    for decode in (decode_data, decode_request, decode_reply):
        with contextlib.suppress(MalformedEnvelope):
            decode(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"v":1,"k":"bc","ts":1}\n["e",1]',  # broadcast without rooms
        b'{"v":1,"k":"mr","ts":1}\n["e",1]',  # multi-room broadcast without rooms
        b'{"v":1,"k":"mr","r":[],"ts":1}\n["e",1]',
        b'{"v":1,"k":"mr","r":"a","ts":1}\n["e",1]',
        b'{"v":2,"k":"bc","r":["a"],"ts":1}\n["e",1]',  # unknown version
        b'{"v":1,"k":"zz","ts":1}\n["e",1]',
        b'{"v":1,"k":"bl","ts":1}\n{"e":1}',
        b'{"v":1,"k":"bl","ts":1}\n[1]',
        b'{"v":1,"k":"bl","ts":"x"}\n["e"]',
        b'{"v":1,"k":"bc","r":[1],"ts":1}\n["e"]',
        b'{"v":1,"k":"bl","ts":1}["e"]',
    ],
)
def test_malformed_messages_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedEnvelope):
        decode_data(body)


def test_requests_round_trip() -> None:
    req = decode_request(encode_request("join", rooms=["a"]))
    assert req["k"] == "join"
    assert req["rooms"] == ["a"]


@given(st.integers(1, 3000))
def test_the_multi_room_form_grows_linearly_with_the_rooms(n: int) -> None:
    """One body, each room named once: the bytes are the args plus the names."""
    rooms = [f"room-{i:05d}" for i in range(n)]
    args = encode_args("e", {"x": 1})
    body = encode_data(KIND_MULTI_ROOM, args, ts=1.0, rooms=rooms)
    names = sum(len(r) + 3 for r in rooms)  # the name, its quotes and a comma
    assert len(body) <= len(args) + names + 64
