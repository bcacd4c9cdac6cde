"""Room names → subject tokens: injective, reversible, never a wildcard or separator."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ConfigError, InvalidRoomName, InvalidSocketId
from shared.subjects import (
    MAX_ROOM_NAME_BYTES,
    Parsed,
    SubjectKind,
    Subjects,
    room_name,
    room_token,
)

room_names = st.text(min_size=1, max_size=200).filter(
    lambda s: (
        len(s.encode("utf-8", "surrogatepass")) <= MAX_ROOM_NAME_BYTES
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
    )
)


@given(room_names)
def test_token_round_trips(name: str) -> None:
    assert room_name(room_token(name)) == name


@given(room_names, room_names)
def test_distinct_names_never_share_a_token(a: str, b: str) -> None:
    if a != b:
        assert room_token(a) != room_token(b)


@given(room_names)
def test_token_is_one_safe_subject_token(name: str) -> None:
    token = room_token(name)
    assert token
    for forbidden in (".", "*", ">", " ", "\t", "\r", "\n", "\x00"):
        assert forbidden not in token
    subject = Subjects("app.prod").room(name)
    assert subject.split(".") == ["app", "prod", "r", token]


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("lobby", "lobby"),
        ("sails_model_user_3:user", "sails_model_user_3=3Auser"),
        ("a.b", "a=2Eb"),
        ("*", "=2A"),
        (">", "=3E"),
        ("with space", "with=20space"),
        ("=41", "=3D41"),
        ("é", "=C3=A9"),
    ],
)
def test_known_encodings(name: str, token: str) -> None:
    assert room_token(name) == token


def test_wildcard_rooms_cannot_alias_each_other() -> None:
    names = ["a.*", "a.b", "a.>", "a", "*", ">", "a b", "a/b", "a=2Eb"]
    tokens = {room_token(n) for n in names}
    assert len(tokens) == len(names)


@pytest.mark.parametrize("bad", ["", 3, None, "x" * (MAX_ROOM_NAME_BYTES + 1), "\ud800"])
def test_bad_room_names_are_refused_with_a_clear_error(bad: object) -> None:
    with pytest.raises(InvalidRoomName):
        room_token(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["=41", "=4", "=4G", "a.b", "=41x", "=C3"])
def test_non_canonical_tokens_are_refused(bad: str) -> None:
    """`=41` decodes to "A", whose token is "A": only the canonical form is accepted."""
    with pytest.raises(InvalidRoomName):
        room_name(bad)


def test_prefix_and_ids_are_validated() -> None:
    with pytest.raises(ConfigError, match="SAILCAST_PREFIX"):
        Subjects("bad prefix")
    with pytest.raises(ConfigError):
        Subjects("a..b")
    with pytest.raises(InvalidSocketId):
        Subjects().socket("")
    with pytest.raises(ConfigError, match="SAILCAST_GATEWAY_ID"):
        Subjects().gateway("no.dots")


# -- parsing: subject → kind + decoded name (the gateway's one handler dispatches on it)

prefixes = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8),
    min_size=1,
    max_size=3,
).map(".".join)
gateway_ids = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
    min_size=1,
    max_size=64,
)


@given(prefixes, room_names)
def test_room_and_socket_subjects_parse_back(prefix: str, name: str) -> None:
    s = Subjects(prefix)
    assert s.parse(s.room(name)) == Parsed(SubjectKind.ROOM, name)
    assert s.parse(s.room(name).encode()) == Parsed(SubjectKind.ROOM, name)
    assert s.parse(s.socket(name)) == Parsed(SubjectKind.SOCKET, name)
    assert s.room(name) != s.multi_room  # no room can name the multi-room subject


@given(prefixes, gateway_ids)
def test_fixed_and_gateway_subjects_parse_back(prefix: str, gw: str) -> None:
    s = Subjects(prefix)
    assert s.parse(s.gateway(gw)) == Parsed(SubjectKind.GATEWAY, gw)
    assert s.parse(s.blast) == Parsed(SubjectKind.BLAST)
    assert s.parse(s.multi_room) == Parsed(SubjectKind.MULTI_ROOM)
    assert s.parse(s.gateways) == Parsed(SubjectKind.GATEWAYS)
    assert s.parse(s.heartbeat) == Parsed(SubjectKind.HEARTBEAT)
    assert s.parse(s.virtual_requests) == Parsed(SubjectKind.VIRTUAL_REQUESTS)
    assert s.parse(s.hook_connect) == Parsed(SubjectKind.HOOK_CONNECT)
    assert s.parse(s.hook_disconnect) == Parsed(SubjectKind.HOOK_DISCONNECT)


@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_parse_never_raises(junk: bytes) -> None:
    s = Subjects("app")
    parsed = s.parse(b"app." + junk)
    if parsed is not None and parsed.kind in (SubjectKind.ROOM, SubjectKind.SOCKET):
        assert s.parse(s.room(parsed.name)) is not None  # only what a builder could make


@pytest.mark.parametrize(
    "subject",
    [
        "other.r.lobby",  # another prefix
        "app",
        "app.",
        "app.r",
        "app.r.",
        "app.r.a.b",  # two tokens: no room makes that
        "app.r.=41",  # not canonical
        "app.r.=4",
        "app.gw.id.a*b",
        "app.blasted",
        "apps.blast",
    ],
)
def test_what_no_builder_makes_does_not_parse(subject: str) -> None:
    assert Subjects("app").parse(subject) is None


def test_the_parse_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.subjects

    monkeypatch.setattr(shared.subjects, "PARSED_CACHE_MAX", 8)
    s = Subjects("app")
    for i in range(50):
        assert s.parse(s.room(f"r{i}")) == Parsed(SubjectKind.ROOM, f"r{i}")
        assert len(s._parsed) <= 8
