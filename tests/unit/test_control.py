"""The control protocol (shared.control): every request, reply and heartbeat round-trips,
the bytes are the ones other languages rely on (docs/protocol.md), and anything else is
refused with MalformedEnvelope, never another exception."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.control import (
    MAX_DISCONNECT_REASON_CHARS,
    MAX_MEMBERS_LIMIT,
    AddMembers,
    Applied,
    Count,
    CountOf,
    Disconnect,
    DisconnectMembers,
    Done,
    ErrorCode,
    Evict,
    Heartbeat,
    Join,
    Leave,
    LeaveAll,
    Member,
    Members,
    MembersOf,
    Ping,
    Pong,
    Refused,
    RemoveMembers,
    Request,
    RequestKind,
    Rooms,
    RoomsOf,
    UnknownKind,
    decode_heartbeat,
    decode_reply,
    decode_request,
    disconnect_reason,
    encode_heartbeat,
    encode_reply,
    encode_request,
)
from shared.errors import MalformedEnvelope, UsageError
from shared.subjects import MAX_ROOM_NAME_BYTES

rooms_ = st.text(min_size=1, max_size=30).filter(
    lambda s: (
        len(s.encode("utf-8", "surrogatepass")) <= MAX_ROOM_NAME_BYTES
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
    )
)
room_tuples = st.lists(rooms_, max_size=5).map(tuple)
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
reasons = st.none() | st.text(min_size=1, max_size=MAX_DISCONNECT_REASON_CHARS).filter(
    lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
)

requests: st.SearchStrategy[Request] = st.one_of(
    st.builds(Join, room_tuples),
    st.builds(Leave, room_tuples),
    st.just(Rooms()),
    st.just(Evict()),
    st.builds(Disconnect, reasons),
    st.builds(AddMembers, rooms_, room_tuples),
    st.builds(RemoveMembers, rooms_, room_tuples),
    st.builds(LeaveAll, rooms_),
    st.just(Ping()),
    st.builds(Members, rooms_, st.none() | ids, st.integers(1, MAX_MEMBERS_LIMIT)),
    st.builds(Count, rooms_),
    st.builds(DisconnectMembers, rooms_, reasons),
)
json_objects = st.dictionaries(
    st.text(max_size=8), st.integers(-(2**53), 2**53) | st.text(max_size=8), max_size=3
)
members_ = st.builds(Member, ids, st.none() | st.text(max_size=10), st.none() | json_objects)
replies = st.one_of(
    st.just(Done()),
    st.builds(RoomsOf, room_tuples),
    st.builds(
        Applied,
        ids,
        st.lists(ids, max_size=4).map(tuple),
        st.none() | st.integers(0, 10**6),
        st.integers(0, 10**6),
    ),
    st.builds(Pong, ids),
    st.builds(MembersOf, ids, st.lists(members_, max_size=4).map(tuple), st.booleans()),
    st.builds(CountOf, ids, st.integers(0, 10**6), st.lists(ids, max_size=4).map(tuple)),
)
refusals = st.builds(
    Refused,
    st.sampled_from(ErrorCode),
    st.none() | st.text(max_size=40),
    st.none() | ids,
    st.none() | st.lists(ids, max_size=4).map(tuple),
)


@given(requests)
def test_requests_round_trip(req: Request) -> None:
    assert decode_request(encode_request(req)) == req


@given(replies)
def test_replies_round_trip(reply: Done | RoomsOf | Applied | Pong | MembersOf | CountOf) -> None:
    expected: Any = type(reply)
    assert decode_reply(encode_reply(reply), expected) == reply


@given(refusals, st.sampled_from([Done, RoomsOf, Applied, Pong]))
def test_refusals_round_trip_whatever_was_expected(refused: Refused, expected: Any) -> None:
    assert decode_reply(encode_reply(refused), expected) == refused


@given(st.builds(Heartbeat, ids, st.booleans(), st.booleans()))
def test_heartbeats_round_trip(beat: Heartbeat) -> None:
    assert decode_heartbeat(encode_heartbeat(beat)) == beat


@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_junk_is_malformed_never_another_error(body: bytes) -> None:
    for decode in (
        decode_request,
        lambda b: decode_reply(b, Applied),
        lambda b: decode_reply(b, RoomsOf),
    ):
        with contextlib.suppress(MalformedEnvelope):
            decode(body)
    with contextlib.suppress(MalformedEnvelope):
        decode_heartbeat(body)


def test_the_bytes_are_those_the_protocol_documents() -> None:
    assert encode_request(Join(("lobby", "a.b"))) == b'{"v":1,"k":"join","rooms":["lobby","a.b"]}'
    assert (
        encode_request(AddMembers("src", ("x",))) == b'{"v":1,"k":"addm","src":"src","dst":["x"]}'
    )
    assert encode_request(LeaveAll("r")) == b'{"v":1,"k":"leaveall","src":"r"}'
    assert encode_request(Ping()) == b'{"v":1,"k":"ping"}'
    assert encode_request(Disconnect()) == b'{"v":1,"k":"disconnect"}'
    assert encode_request(Disconnect("bye")) == b'{"v":1,"k":"disconnect","reason":"bye"}'
    assert encode_request(DisconnectMembers("sailcast:user:42", "banned")) == (
        b'{"v":1,"k":"dism","room":"sailcast:user:42","reason":"banned"}'
    )
    assert encode_request(DisconnectMembers("r")) == b'{"v":1,"k":"dism","room":"r"}'
    assert encode_reply(Done()) == b'{"ok":true}'
    assert encode_reply(Applied("g1", ("g1", "g2"), 3, 1)) == (
        b'{"ok":true,"n":3,"gw":"g1","peers":["g1","g2"],"refused":1}'
    )
    assert encode_reply(Applied("g1", ("g1",))) == b'{"ok":true,"gw":"g1","peers":["g1"]}'
    assert encode_reply(Pong("g1")) == b'{"ok":true,"gw":"g1"}'
    assert encode_reply(Refused(ErrorCode.NO_SUCH_SOCKET)) == (
        b'{"ok":false,"error":"no_such_socket"}'
    )
    assert encode_heartbeat(Heartbeat("g1", hello=True)) == b'{"id":"g1","hello":true}'
    assert encode_request(Members("lobby", "s1", 2)) == (
        b'{"v":1,"k":"members","room":"lobby","after":"s1","limit":2}'
    )
    assert encode_request(Count("lobby")) == b'{"v":1,"k":"count","room":"lobby"}'
    assert encode_reply(
        MembersOf("g1", (Member("s1", "42", {"n": "Ann"}), Member("s2")), more=True)
    ) == (
        b'{"ok":true,"gw":"g1","members":[{"sid":"s1","uid":"42","info":{"n":"Ann"}},'
        b'{"sid":"s2"}],"more":true}'
    )
    assert encode_reply(CountOf("g1", 3, ("42",))) == (
        b'{"ok":true,"gw":"g1","sockets":3,"users":["42"]}'
    )


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"v":2,"k":"join","rooms":["a"]}', "not a v1 request"),
        (b'{"v":1,"k":"join","rooms":"a"}', "rooms must be a list"),
        (b'{"v":1,"k":"join","rooms":[""]}', "rooms must be a list"),
        (b'{"v":1,"k":"addm","src":5,"dst":["x"]}', "src must be"),
        (b'{"v":1,"k":"addm","src":"s","dst":"x"}', "dst must be"),
        (b'{"v":1,"k":"leave","rooms":["' + b"x" * 1025 + b'"]}', "exceeds"),
        (b"[1]", "JSON object"),
        (b'{"v":1,"k":"members","room":"a","limit":0}', "limit must be"),
        (b'{"v":1,"k":"members","room":"a","after":""}', "after must be"),
        (b'{"v":1,"k":"count","room":""}', "room must be"),
        (b'{"v":1,"k":"disconnect","reason":5}', "reason must be a string"),
        (b'{"v":1,"k":"disconnect","reason":""}', "reason must be a string"),
        (b'{"v":1,"k":"dism","room":"r","reason":"' + b"x" * 257 + b'"}', "1 to 256"),
        (b'{"v":1,"k":"dism"}', "room must be"),
    ],
)
def test_malformed_requests_name_what_is_wrong(body: bytes, match: str) -> None:
    with pytest.raises(MalformedEnvelope, match=match):
        decode_request(body)


def test_an_unknown_kind_is_told_apart_from_a_malformed_request() -> None:
    with pytest.raises(UnknownKind) as caught:
        decode_request(b'{"v":1,"k":"teleport"}')
    assert caught.value.kind == "teleport"


def test_each_kind_has_one_request_class() -> None:
    samples: list[Request] = [
        Join(("a",)),
        Leave(("a",)),
        Rooms(),
        Disconnect(),
        Evict(),
        AddMembers("a", ("b",)),
        RemoveMembers("a", ("b",)),
        LeaveAll("a"),
        Ping(),
        Members("a"),
        Count("a"),
        DisconnectMembers("a"),
    ]
    assert sorted(r.kind for r in samples) == sorted(RequestKind)


def test_a_disconnect_reason_is_checked_where_it_is_given() -> None:
    assert disconnect_reason(None) is None
    assert disconnect_reason("x" * MAX_DISCONNECT_REASON_CHARS) == "x" * 256
    for bad in ("", "x" * (MAX_DISCONNECT_REASON_CHARS + 1), 5, b"bye", ["bye"]):
        with pytest.raises(UsageError, match="disconnect reason"):
            disconnect_reason(bad)


def test_heartbeat_json_that_is_not_a_heartbeat_is_ignored_not_malformed() -> None:
    assert decode_heartbeat(b"[1]") is None
    assert decode_heartbeat(orjson.dumps({"id": 5})) is None
    with pytest.raises(MalformedEnvelope):
        decode_heartbeat(b"{nope")
