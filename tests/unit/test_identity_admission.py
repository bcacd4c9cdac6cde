"""Who a socket is at admission (issue 12): reading and validating the identity and
rooms at connect (gateway/connect_identity.py), their wire forms (shared/vrequest.py,
the session record), the router's `Allow`, and the core joining them before the
CONNECT acknowledgement (on the in-memory broker, as tests/unit/test_gateway_core.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
import pytest

from gateway.connect_identity import NOBODY, Admitted, IdentityRefused, IdentityRules
from gateway.identities import Identity
from gateway.recovery.sessions import SessionRecord, StoredSession, who_of
from publisher.router import Allow, ConnectCheck, Router
from publisher.sockets import own_rooms, user_rooms
from shared.control import AddMembers, Join, Leave, LeaveAll, Refused, RemoveMembers
from shared.envelope import encode_reply
from shared.errors import MalformedEnvelope, ReservedRoom, UsageError
from shared.vrequest import (
    ConnectAnswer,
    ConnectNotice,
    Handshake,
    decode_after_connect,
    decode_connect_answer,
    encode_after_connect,
    encode_connect_answer,
)
from tests.unit.fakes import RecordingConnection
from tests.unit.test_gateway_core import Cluster, S, metric, received

RULES = IdentityRules(
    user_claim="sub", info_claim="profile", rooms_claim="rooms", max_rooms_per_socket=5
)


# -- reading the grant ---------------------------------------------------------------------
def test_jwt_claims_give_the_user_info_and_rooms() -> None:
    got = RULES.from_claims({"sub": 42, "profile": {"name": "Ann"}, "rooms": ["a", "b", "a"]})
    assert got == Admitted(Identity("42", {"name": "Ann"}), ("a", "b"))
    assert got.joined_at_connect == ("sailcast:user:42", "a", "b")
    assert RULES.from_claims({"exp": 1}) == NOBODY  # no claim: anonymous, no rooms
    assert RULES.from_claims(None) == NOBODY
    assert IdentityRules(user_claim="").from_claims({"sub": "u"}) == NOBODY  # turned off
    assert IdentityRules().from_claims({"sub": "u", "rooms": ["x"]}).rooms == ()  # claim off


@pytest.mark.parametrize(
    ("user", "info", "rooms", "message"),
    [
        ("", None, None, "a user id must be 1 to 256 characters"),
        (True, None, None, "a user id must be a string or an integer"),
        ({"id": 1}, None, None, "a user id must be a string or an integer"),
        ("u", ["not", "an", "object"], None, "presence info must be a JSON object"),
        ("u", {"bio": "x" * 2000}, None, "exceeds 1024 bytes"),
        ("u", None, "lobby", "rooms must be a list of room names"),
        ("u", None, ["ok", 3], "room name must be a string"),
        ("u", None, [""], "room name must not be empty"),
        ("u", None, ["sailcast:user:other"], "is reserved"),
        ("u", None, ["a", "b", "c", "d"], "over the limit of 5"),
        ("\U0001f600" * 256, None, None, "user id too long"),
    ],
)
def test_an_unusable_grant_is_refused_saying_why(
    user: Any, info: Any, rooms: Any, message: str
) -> None:
    with pytest.raises(IdentityRefused, match=r"^Invalid identity: ") as caught:
        RULES.check(user, info, rooms)
    assert message in str(caught.value)


def test_rooms_within_the_limit_count_the_own_and_user_rooms() -> None:
    assert RULES.check("u", None, ["a", "b", "c"]).rooms == ("a", "b", "c")  # 5 rooms
    assert RULES.check(None, None, ["a", "b", "c", "d"]).rooms == ("a", "b", "c", "d")
    assert RULES.check(None, {"k": 1}, None) == Admitted(Identity(None, {"k": 1}))


# -- the wire ------------------------------------------------------------------------------
def test_an_old_connect_answer_still_parses_and_a_new_one_round_trips() -> None:
    old = decode_connect_answer(encode_reply(True, claims={"user": 42}))
    assert old == ConnectAnswer(True, claims={"user": 42})  # plain data: no identity
    new = ConnectAnswer(True, {"c": 1}, user="u1", info={"n": "A"}, rooms=["r1"])
    assert decode_connect_answer(encode_connect_answer(new)) == new
    assert b"user" not in encode_connect_answer(ConnectAnswer(True, claims=1))


def test_the_after_connect_notice_round_trips() -> None:
    notice = ConnectNotice(
        "sid1", "gwa", "u1", {"n": 1}, ("sailcast:user:u1", "r"), Handshake(query={"q": "1"})
    )
    assert decode_after_connect(encode_after_connect(notice)) == notice
    anonymous = ConnectNotice("sid2", "gwa", None, None, (), Handshake())
    assert decode_after_connect(encode_after_connect(anonymous)) == anonymous
    bad = orjson.loads(encode_after_connect(notice))
    bad["rooms"] = "r"
    with pytest.raises(MalformedEnvelope):
        decode_after_connect(orjson.dumps(bad))


def test_the_session_record_keeps_who_the_socket_is() -> None:
    who = who_of(Admitted(Identity("u1", {"n": 1}), ("r",)))
    record = SessionRecord("sid", {"chat": 3}, {"c": 1}, "e", "gwa", True, 1.0, who)
    back = SessionRecord.decode(record.encode())
    assert back == record
    assert StoredSession("pid", back, 1).who == Admitted(Identity("u1", {"n": 1}))
    assert who_of(NOBODY) is None
    plain = SessionRecord("sid", {}, None, "e", "gwa", True, 1.0)
    assert b"who" not in plain.encode()  # an anonymous socket's record is unchanged
    assert StoredSession("pid", SessionRecord.decode(plain.encode()), 1).who is None


# -- the worker's side ---------------------------------------------------------------------
def check_with(result: Any) -> ConnectAnswer:
    router = Router()
    router.before_connect(lambda check: result)
    check = ConnectCheck("sid", "gwa", Handshake(), pub=None)  # type: ignore[arg-type]
    return asyncio.run(router.check_connect(check))


def test_allow_says_who_and_plain_data_stays_claims() -> None:
    assert check_with(Allow(user_id=7, info={"n": "A"}, rooms=("r1", "r2"), data={"x": 1})) == (
        ConnectAnswer(True, {"x": 1}, user=7, info={"n": "A"}, rooms=["r1", "r2"])
    )
    assert check_with(Allow(rooms="solo")).rooms == ["solo"]
    assert check_with(Allow()) == ConnectAnswer(True)
    assert check_with({"user": 42}) == ConnectAnswer(True, claims={"user": 42})


def test_user_rooms_and_reserved_rooms_on_the_publisher() -> None:
    assert user_rooms("u1") == ["sailcast:user:u1"]
    assert user_rooms([1, "1", "u2"]) == ["sailcast:user:1", "sailcast:user:u2"]
    for bad in ([], [None], "", True):
        with pytest.raises(UsageError):
            user_rooms(bad)  # type: ignore[arg-type]
    assert own_rooms(["a", "b"]) == ["a", "b"]
    with pytest.raises(ReservedRoom, match="sailcast:user:u1"):
        own_rooms(["a", "sailcast:user:u1"])


# -- the core ------------------------------------------------------------------------------
@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(stack)


async def test_the_user_room_and_connect_rooms_are_joined_at_registration(
    cluster: Cluster,
) -> None:
    gw = await cluster.gateway("gwa")
    conn_a = RecordingConnection("a")
    await gw.socket_connected(conn_a, identity=Identity("u1", {"n": 1}), rooms=("team",))
    b = await cluster.connect(gw, "b")
    # routable as soon as socket_connected returned: the subscriptions are in place
    assert cluster.subscribed(S.room("sailcast:user:u1"))
    assert cluster.subscribed(S.room("team"))
    await cluster.broadcast(["sailcast:user:u1"], "dm", 1)
    await cluster.broadcast(["team"], "t", 2)
    assert received(conn_a) == [["dm", 1], ["t", 2]]
    assert received(b) == []
    assert gw.identities.get("a") == Identity("u1", {"n": 1})
    assert metric(gw, "sailcast_gateway_connect_rooms_total") == 2
    assert metric(gw, "sailcast_gateway_sockets_with_user") == 1
    await gw.socket_disconnected("a")
    assert metric(gw, "sailcast_gateway_sockets_with_user") == 0
    assert gw.identities.get("a").user_id is None


async def test_the_control_path_refuses_reserved_rooms(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    await cluster.connect(gw, "a")
    for req in (Join(("ok", "sailcast:user:u1")), Leave(("sailcast:x",))):
        answer = await cluster.ask("a", req)
        assert isinstance(answer, Refused)
        assert answer.error.value == "bad_request"
        assert "reserved" in (answer.message or "")
    assert gw.rooms.rooms_of("a") == {"a"}  # nothing of the refused join applied
    for cluster_req in (
        AddMembers("a", ("sailcast:user:u1",)),
        RemoveMembers("a", ("sailcast:u",)),
    ):
        (refused,) = await cluster.ask_all(cluster_req, 1)
        assert isinstance(refused, Refused)
        assert refused.error.value == "bad_request"
        assert refused.gw == "gwa"
    assert gw.rooms.rooms_of("a") == {"a"}


async def test_leave_all_keeps_the_user_room(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    conn = RecordingConnection("a")
    await gw.socket_connected(conn, identity=Identity("u1"), rooms=("team", "side"))
    (applied,) = await cluster.ask_all(LeaveAll("team"), 1)
    assert not isinstance(applied, Refused)
    assert gw.rooms.rooms_of("a") == {"a", "sailcast:user:u1"}
    await cluster.broadcast(["sailcast:user:u1"], "dm", 1)
    assert received(conn) == [["dm", 1]]
