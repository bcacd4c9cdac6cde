"""Room arguments that are not room names (issue 16 #7): every verb taking rooms raises
InvalidRoomName naming the value, before anything is sent, instead of a bare
`TypeError: ... not iterable` or a message about an int taken out of a bytes object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from publisher.models import Model, ModelRegistry, Planner
from publisher.sockets import Sockets
from shared.envelope import MULTI_ROOM_MIN_ROOMS
from shared.errors import InvalidRoomName
from shared.subjects import Subjects

BAD_ROOMS = [
    pytest.param(None, "None (NoneType)", id="None"),
    pytest.param(5, "5 (int)", id="int"),
    pytest.param(b"bytes", "b'bytes' (bytes)", id="bytes"),
    pytest.param(bytearray(b"ab"), "bytearray(b'ab') (bytearray)", id="bytearray"),
    pytest.param(["lobby", 7], "7 (int)", id="int-in-list"),
    pytest.param(["lobby", None], "None (NoneType)", id="None-in-list"),
    pytest.param([b"lobby"], "b'lobby' (bytes)", id="bytes-in-list"),
    pytest.param([["nested"]], "['nested'] (list)", id="list-in-list"),
    pytest.param(3.5, "3.5 (float)", id="float"),
]


class Unreachable:
    """A publisher whose transport must never be used: the check comes first."""

    subjects = Subjects("t")
    max_payload_bytes = 1 << 20

    async def ask_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a request was sent for an invalid room argument")

    async def ask_all_gateways(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a request was sent for an invalid room argument")

    async def publish_raw(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a message was published for an invalid room argument")

    async def publish_stored(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a message was stored for an invalid room argument")

    def raise_stored_failures(self) -> None:
        raise AssertionError("a message was about to be sent for an invalid room argument")

    @property
    def room_queries(self) -> Any:
        raise AssertionError("a members/count query was sent for an invalid room argument")


@pytest.fixture
def sockets() -> Sockets:
    return Sockets(Unreachable())


def verbs(s: Sockets) -> dict[str, Callable[[Any], Awaitable[None]]]:
    """Every verb that takes rooms, with the room argument left open."""
    return {
        "broadcast": lambda rooms: s.broadcast(rooms, "ev", 1),
        "join": lambda rooms: s.join("sid1", rooms),
        "leave": lambda rooms: s.leave("sid1", rooms),
        "add_room_members_to_rooms dest": lambda rooms: s.add_room_members_to_rooms("a", rooms),
        "add_room_members_to_rooms source": lambda room: s.add_room_members_to_rooms(room, "b"),
        "remove_room_members_from_rooms dest": lambda rooms: s.remove_room_members_from_rooms(
            "a", rooms
        ),
        "remove_room_members_from_rooms source": lambda room: s.remove_room_members_from_rooms(
            room, "b"
        ),
        "leave_all": lambda room: s.leave_all(room),
    }


@pytest.mark.parametrize(("bad", "shown"), BAD_ROOMS)
async def test_every_verb_names_the_bad_room_argument(
    sockets: Sockets, bad: object, shown: str
) -> None:
    for verb, call in verbs(sockets).items():
        with pytest.raises(InvalidRoomName) as raised:
            await call(bad)
        assert shown in str(raised.value), verb


@pytest.mark.parametrize(("bad", "shown"), BAD_ROOMS)
def test_prepare_broadcast_refuses_before_encoding(
    sockets: Sockets, bad: object, shown: str
) -> None:
    """The SyncPublisher's queued broadcast validates with this, in the caller's thread."""
    with pytest.raises(InvalidRoomName) as raised:
        sockets.prepare_broadcast(bad, "ev", 1)  # type: ignore[arg-type]
    assert shown in str(raised.value)


def test_a_long_bad_value_is_quoted_short(sockets: Sockets) -> None:
    with pytest.raises(InvalidRoomName) as raised:
        sockets.prepare_broadcast(["ok", b"x" * 10_000], "ev", 1)  # type: ignore[list-item]
    assert len(str(raised.value)) < 200
    assert "(bytes)" in str(raised.value)


def test_good_room_arguments_still_work(sockets: Sockets) -> None:
    """Strings, lists, tuples, sets and generators of names; duplicates removed in order."""
    for rooms, expected in [
        ("lobby", ["lobby"]),
        (["b", "a", "b"], ["b", "a"]),
        (("a",), ["a"]),
        ({"only"}, ["only"]),
        ((r for r in ["x", "y"]), ["x", "y"]),
    ]:
        pairs = sockets.prepare_broadcast(rooms, "ev", 1)
        assert [s.rsplit(".", 1)[-1] for s, _, _ in pairs] == expected


def test_empty_room_arguments_are_still_refused(sockets: Sockets) -> None:
    with pytest.raises(InvalidRoomName, match="no room given"):
        sockets.prepare_broadcast([], "ev", 1)
    with pytest.raises(InvalidRoomName, match="empty"):
        sockets.prepare_broadcast("", "ev", 1)


# -- where room names are built from model arguments (Sails 0.12 contexts) ----------------
@pytest.fixture
def post() -> Planner:
    r = ModelRegistry()
    r.define("post", contexts=True)
    return Planner(r, "post")


def test_a_context_string_is_one_context_not_its_characters(post: Planner) -> None:
    """Sails 0.12: "a string or array means those contexts"."""
    (join,) = post.subscribe("S", 1, "update")
    assert join.rooms == ("sails_model_post_1:update",)
    (leave,) = post.unsubscribe("S", 1, "destroy")
    assert leave.rooms == ("sails_model_post_1:destroy",)
    r = ModelRegistry()
    r.define("comment", contexts=True, autosubscribe="update")
    (join,) = Planner(r, "comment").subscribe("S", 2)
    assert join.rooms == ("sails_model_comment_2:update",)


@pytest.mark.parametrize(
    ("bad", "shown"),
    [(5, "5"), (b"update", "b'update'"), ([3], "3"), ([""], "''"), (["update", None], "None")],
)
def test_bad_contexts_name_the_value(post: Planner, bad: object, shown: str) -> None:
    with pytest.raises(InvalidRoomName, match="contexts") as raised:
        post.subscribe("S", 1, bad)  # type: ignore[arg-type]
    assert shown in str(raised.value)
    with pytest.raises(InvalidRoomName):
        post.unsubscribe("S", 1, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidRoomName, match="autosubscribe"):
        ModelRegistry().define("x", contexts=True, autosubscribe=bad)  # type: ignore[arg-type]


def test_a_room_context_must_be_a_string(post: Planner) -> None:
    with pytest.raises(InvalidRoomName, match="5"):
        post.room(1, 5)  # type: ignore[arg-type]
    assert post.room(1, "update") == "sails_model_post_1:update"


async def test_the_model_facade_checks_before_sending() -> None:
    """`Model.subscribe` plans (and so checks) before any request."""
    r = ModelRegistry()
    r.define("post", contexts=True)
    pub = SimpleNamespace(sockets=Sockets(Unreachable()))
    model = Model(pub, "post", registry=r)
    with pytest.raises(InvalidRoomName, match="5"):
        await model.subscribe("S", 1, 5)  # type: ignore[arg-type]


def test_every_name_of_a_multi_room_broadcast_is_checked(sockets: Sockets) -> None:
    """The multi-room form builds no room subject, yet refuses a bad name the same way."""
    many = [f"r{i}" for i in range(MULTI_ROOM_MIN_ROOMS)]
    with pytest.raises(InvalidRoomName, match="exceeds 1024 bytes"):
        sockets.prepare_broadcast([*many, "x" * 2000], "ev", 1)
    with pytest.raises(InvalidRoomName, match="must not be empty"):
        sockets.prepare_broadcast([*many, ""], "ev", 1)
