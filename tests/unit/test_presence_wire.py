"""The presence wire format (shared/presence.py): every message round-trips, junk is
refused with MalformedEnvelope, and the subject of a presence room parses back."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import MalformedEnvelope
from shared.presence import (
    Fact,
    PresenceDelta,
    PresenceHello,
    PresenceState,
    decode_presence,
    encode_presence,
    member_entry,
    socket_key,
    user_key,
)
from shared.subjects import Parsed, SubjectKind, Subjects

ids = st.text(min_size=1, max_size=12)
counts = st.integers(min_value=0, max_value=2**53)
infos = st.none() | st.dictionaries(
    st.text(max_size=5), st.integers(-1000, 1000) | st.text(max_size=5)
)
facts = st.tuples(st.builds(user_key, ids) | st.builds(socket_key, ids), infos).map(
    lambda t: Fact(*t)
)
deltas = st.builds(
    PresenceDelta,
    ids,
    counts,
    counts,
    counts,
    counts,
    st.lists(facts, max_size=4).map(tuple),
    st.lists(st.builds(user_key, ids), max_size=4).map(tuple),
)
states = st.builds(
    PresenceState,
    ids,
    counts,
    counts,
    counts,
    counts,
    st.lists(facts, max_size=4).map(tuple),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
hellos = st.builds(PresenceHello, ids, st.lists(ids, max_size=3).map(tuple))


@given(deltas | states | hellos)
def test_every_message_round_trips(msg: PresenceDelta | PresenceState | PresenceHello) -> None:
    assert decode_presence(encode_presence(msg)) == msg


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"v":1,"t":"d"}',
        b'{"v":2,"t":"h","gw":"a"}',
        b'{"v":1,"t":"x","gw":"a","inc":1,"seq":1,"prev":0,"n":0}',
        b'{"v":1,"t":"d","gw":"a","inc":1,"seq":-1,"prev":0,"n":0}',
        b'{"v":1,"t":"d","gw":"a","inc":1,"seq":1,"prev":0,"n":0,"add":[["u:1",5]]}',
        b'{"v":1,"t":"d","gw":"a","inc":1,"seq":1,"prev":0,"n":0,"del":[3]}',
        b'{"v":1,"t":"s","gw":"a","inc":1,"seq":1,"prev":0,"n":0,"first":"yes"}',
        b'{"v":1,"t":"h","gw":"a","to":"b"}',
    ],
)
def test_junk_is_refused(body: bytes) -> None:
    with pytest.raises(MalformedEnvelope):
        decode_presence(body)


def test_the_documented_bytes() -> None:
    msg = PresenceDelta("gw-1", 7, 12, 9, 3, (Fact("u:42", {"name": "Ann"}),), ("s:abc",))
    assert orjson.loads(encode_presence(msg)) == {
        "v": 1,
        "gw": "gw-1",
        "t": "d",
        "inc": 7,
        "seq": 12,
        "prev": 9,
        "n": 3,
        "add": [["u:42", {"name": "Ann"}]],
        "del": ["s:abc"],
    }


def test_what_a_client_sees_of_a_key() -> None:
    assert member_entry("u:42", {"a": 1}) == {"user_id": "42", "info": {"a": 1}}
    assert member_entry("s:xyz", None) == {"user_id": None, "socket_id": "xyz", "info": None}
    assert member_entry("u:42", None, with_info=False) == {"user_id": "42"}


@given(st.text(min_size=1, max_size=30))
def test_presence_subjects_parse_back(room: str) -> None:
    s = Subjects("p")
    assert s.parse(s.presence(room)) == Parsed(SubjectKind.PRESENCE, room)
