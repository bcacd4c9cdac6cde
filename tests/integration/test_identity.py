"""Who a socket is and its rooms at connect (issue 12, docs/presence.md "Identity and
rooms at connect"), seen by real Socket.IO clients of real gateway processes on a real
nats-server, with workers as publisher.router services in this process.

- rooms from the JWT claim and from a worker's `before_connect` (`Allow`) are in effect
  before the first event: a broadcast from the `after_connect` hook, and one published
  the instant the client's connect handler runs, both arrive;
- `broadcast_to_user` reaches every tab of the user on every gateway, and nobody else;
- reserved rooms cannot be joined through the publisher nor a raw control request, and
  a client cannot name its user or presence info;
- an unusable identity refuses the connect with the message;
- `after_connect` reaches exactly one of two workers, once per socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import nats
import pytest
import socketio

from gateway.embedded_nats import EmbeddedNats
from publisher import Allow, ConnectCheck, Connected, Publisher, ReservedRoom, Router, SyncPublisher
from publisher.router import RouterService
from shared.control import AddMembers, Done, Join, Refused, decode_reply, encode_request
from shared.subjects import Subjects
from tests.helpers import GatewayProcess, RecordingClient, quiet

pytestmark = pytest.mark.integration

SECRET = "a-test-secret-of-reasonable-length-0123456789"
API_KEY = "identity-test-key"
WAIT_S = 5.0
JWT = {
    "before_connect": "jwt",
    "jwt_secret": SECRET,
    "jwt_rooms_claim": "rooms",
    "jwt_info_claim": "profile",
}

GatewayFactory = Callable[..., GatewayProcess]
Serve = Callable[[Router], Awaitable[RouterService]]
OnConnect = Callable[[RecordingClient], Awaitable[None]]


class Refusal(Exception):
    """A connect the gateway refused; `message` is what the client was told."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Clients:
    """Real python-socketio clients that record every event; `connect` may run a
    coroutine from the client's own connect handler (the instant it is connected)."""

    def __init__(self) -> None:
        self.made: list[RecordingClient] = []

    async def connect(
        self, gw: GatewayProcess, *, auth: Any = None, on_connect: OnConnect | None = None
    ) -> RecordingClient:
        client = socketio.AsyncClient(reconnection=False)
        rc = RecordingClient(client)
        errors: list[Any] = []

        async def on_any(event: str, *args: Any) -> None:
            rc.events.append((event, args[0] if len(args) == 1 else list(args)))
            rc._changed.set()

        async def connected() -> None:
            if on_connect is not None:
                await on_connect(rc)

        client.on("*", on_any)
        client.on("connect", connected)
        client.on("connect_error", errors.append)
        try:
            await client.connect(gw.url, auth=auth, transports=["websocket"], wait_timeout=10)
        except socketio.exceptions.ConnectionError as exc:
            shown = [e.get("message") if isinstance(e, dict) else e for e in errors]
            raise Refusal(" | ".join(str(e) for e in shown) or str(exc)) from None
        self.made.append(rc)
        return rc


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    made = Clients()
    yield made
    for rc in made.made:
        await rc.disconnect()


def token(sub: Any = None, **claims: Any) -> dict[str, str]:
    body = {"exp": int(time.time()) + 300, **claims}
    if sub is not None:
        body["sub"] = sub
    return {"token": jwt.encode(body, SECRET, algorithm="HS256")}


def hearing(router: Router) -> asyncio.Queue[Connected]:
    """The after_connect notices this router's worker is told."""
    heard: asyncio.Queue[Connected] = asyncio.Queue()

    @router.after_connect
    async def came(c: Connected) -> None:
        heard.put_nowait(c)

    return heard


async def events(client: RecordingClient, *names: str) -> dict[str, list[Any]]:
    """Wait until each named event arrived (as often as it is named); what each carried."""

    def arrived(ev: list[tuple[str, Any]]) -> bool:
        return all(sum(e == n for e, _ in ev) >= names.count(n) for n in names)

    await client.wait_for(arrived, WAIT_S)
    return {n: client.named(n) for n in names}


# -- rooms at connect are in effect before the first event ---------------------------------
async def test_rooms_from_the_jwt_claim_are_in_effect_before_the_first_event(
    gateway_factory: GatewayFactory, clients: Clients, serve: Serve, publisher: Publisher
) -> None:
    gwa, gwb = gateway_factory("gwa", **JWT), gateway_factory("gwb", **JWT)
    router = Router()
    heard: asyncio.Queue[Connected] = asyncio.Queue()

    @router.after_connect
    async def welcome(c: Connected) -> None:  # a broadcast from inside the hook
        await heard.put(c)
        assert c.user_id is not None
        await c.pub.sockets.broadcast_to_user(c.user_id, "hello", {"rooms": list(c.rooms)})
        for room in c.rooms[1:]:
            await c.pub.sockets.broadcast(room, "welcome", room)

    await serve(router)

    async def first(rc: RecordingClient) -> None:  # the instant the client is connected
        await publisher.sockets.broadcast("team:1", "first", {"at": "connect"})

    for gw in (gwa, gwb):
        auth = token("u1", rooms=["team:1", "team:2"], profile={"name": "Ann"})
        client = await clients.connect(gw, auth=auth, on_connect=first)
        got = await events(client, "first", "hello", "welcome", "welcome")
        assert got["first"] == [{"at": "connect"}]
        assert got["hello"] == [{"rooms": ["sailcast:user:u1", "team:1", "team:2"]}]
        assert sorted(got["welcome"]) == ["team:1", "team:2"]
        notice = await asyncio.wait_for(heard.get(), WAIT_S)
        assert (notice.socket_id, notice.gateway_id) == (client.sid, gw.gateway_id)
        assert (notice.user_id, notice.info) == ("u1", {"name": "Ann"})
        assert notice.rooms == ("sailcast:user:u1", "team:1", "team:2")
        assert set(await publisher.sockets.rooms(client.sid)) == {
            client.sid,
            "sailcast:user:u1",
            "team:1",
            "team:2",
        }
    for gw in (gwa, gwb):
        metrics = gw.metrics()
        assert metrics["sailcast_gateway_connect_rooms_total"] == 3
        assert metrics["sailcast_gateway_sockets_with_user"] == 1
        assert metrics['sailcast_gateway_after_connect_notices_total{outcome="sent"}'] == 1


async def test_rooms_and_identity_from_before_connect_are_in_effect_before_the_first_event(
    gateway_factory: GatewayFactory, clients: Clients, serve: Serve, publisher: Publisher
) -> None:
    gw = gateway_factory(before_connect="workers", max_rooms_per_socket=5)
    router = Router()
    heard = hearing(router)

    @router.before_connect
    def check(c: ConnectCheck) -> Any:  # a plain hook runs in a thread
        who = str((c.handshake.auth or {}).get("token"))
        if who == "plain":
            return {"legacy": True}  # plain claims data: accepted, anonymous, as before
        bad = {
            "empty": Allow(user_id=""),
            "fat": Allow(user_id="f", info={"bio": "x" * 2000}),
            "reserved": Allow(user_id="r", rooms=["sailcast:user:admin"]),
            "many": Allow(user_id="m", rooms=[f"r{i}" for i in range(4)]),
        }
        return bad.get(who) or Allow(
            user_id=who, info={"name": who.title()}, rooms=[f"desk:{who}"], data={"x": 1}
        )

    await serve(router)

    async def first(rc: RecordingClient) -> None:
        await publisher.sockets.broadcast("desk:ann", "first", 1)
        await publisher.sockets.broadcast_to_user("ann", "dm", 2)

    ann = await clients.connect(gw, auth={"token": "ann"}, on_connect=first)
    assert await events(ann, "first", "dm") == {"first": [1], "dm": [2]}
    notice = await asyncio.wait_for(heard.get(), WAIT_S)
    assert (notice.user_id, notice.info, notice.rooms) == (
        "ann",
        {"name": "Ann"},
        ("sailcast:user:ann", "desk:ann"),
    )
    assert notice.handshake.claims == {"x": 1}  # `data` is what requests see as claims

    plain = await clients.connect(gw, auth={"token": "plain"})
    notice = await asyncio.wait_for(heard.get(), WAIT_S)
    assert (notice.socket_id, notice.user_id, notice.rooms) == (plain.sid, None, ())
    assert notice.handshake.claims == {"legacy": True}

    refused = {
        "empty": "Invalid identity: a user id must be 1 to 256 characters",
        "fat": "Invalid identity: presence info of 2010 bytes exceeds 1024 bytes",
        "reserved": "Invalid identity: room 'sailcast:user:admin' is reserved",
        "many": "Invalid identity: 4 rooms at connect would put the socket in 6 rooms, "
        "over the limit of 5",
    }
    for who, message in refused.items():
        with pytest.raises(Refusal) as caught:
            await clients.connect(gw, auth={"token": who})
        assert message in caught.value.message, who
    metrics = gw.metrics()
    assert metrics['sailcast_gateway_connect_rejections_total{reason="invalid_identity"}'] == 4
    assert metrics["sailcast_gateway_connections"] == 2
    assert heard.empty()  # no notice for a refused socket


async def test_a_jwt_identity_that_cannot_be_used_refuses_the_connect(
    gateway_factory: GatewayFactory, clients: Clients, publisher: Publisher
) -> None:
    gw = gateway_factory(**JWT, presence_info_max_bytes=64, jwt_user_claim="uid")
    refused = [
        (token(uid=True), "Invalid identity: a user id must be a string or an integer"),
        (token(uid=""), "Invalid identity: a user id must be 1 to 256 characters"),
        (token(uid=7, profile={"bio": "x" * 100}), "exceeds 64 bytes"),
        (token(uid=7, profile="Ann"), "presence info must be a JSON object"),
        (token(uid=7, rooms=["ok", "sailcast:user:v"]), "'sailcast:user:v' is reserved"),
        (token(uid=7, rooms="lobby"), "rooms must be a list of room names"),
    ]
    for auth, message in refused:
        with pytest.raises(Refusal) as caught:
            await clients.connect(gw, auth=auth)
        assert message in caught.value.message
    anonymous = await clients.connect(gw, auth=token("s", rooms=["lobby"]))  # no `uid`
    assert set(await publisher.sockets.rooms(anonymous.sid)) == {anonymous.sid, "lobby"}
    numbered = await clients.connect(gw, auth=token(uid=7))  # an integer id: "7"
    assert set(await publisher.sockets.rooms(numbered.sid)) == {numbered.sid, "sailcast:user:7"}
    assert gw.metric('sailcast_gateway_connect_rejections_total{reason="invalid_identity"}') == 6


# -- addressing users ----------------------------------------------------------------------
async def test_broadcast_to_user_reaches_every_tab_on_every_gateway_and_nobody_else(
    gateway_factory: GatewayFactory,
    clients: Clients,
    publisher: Publisher,
    nats_server: EmbeddedNats,
    prefix: str,
) -> None:
    gwa = gateway_factory("gwa", **JWT, api_key=API_KEY, api_port=0)
    gwb = gateway_factory("gwb", **JWT)
    tabs = [
        await clients.connect(gwa, auth=token("u1")),
        await clients.connect(gwa, auth=token("1")),  # user "1" is user 1...
        await clients.connect(gwb, auth=token("u1")),
    ]
    other = await clients.connect(gwb, auth=token("u2"))
    anonymous = await clients.connect(gwa, auth=token(None))
    everyone = [*tabs, other, anonymous]

    await publisher.sockets.broadcast_to_user("u1", "dm", "hi")
    await publisher.sockets.broadcast_to_user(1, "dm", "one")  # ...the user "1"
    await publisher.sockets.broadcast_to_user(["u1", "u2"], "both", 2, omit=tabs[2].sid)
    many = ["u1", "u2", *(f"nobody{i}" for i in range(8))]  # the multi-room path
    await publisher.sockets.broadcast_to_user(many, "many", 3)
    await quiet(everyone, publisher)
    assert [t.named("dm") for t in tabs] == [["hi"], ["one"], ["hi"]]
    assert [t.named("both") for t in tabs] == [[2], [], []]
    assert other.named("both") == [2]
    assert [c.named("many") for c in everyone] == [[3], [], [3], [3], []]
    assert other.named("dm") == anonymous.named("dm") == []
    assert anonymous.events == []

    # the blocking twin, and the HTTP API, are the same one broadcast
    with SyncPublisher(nats_server.url, prefix=prefix) as sync:
        await asyncio.to_thread(sync.sockets.broadcast_to_user, ["u2"], "sync", 4)
        await asyncio.to_thread(sync.flush)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{gwa.api_port}/api/broadcast_to_user",
            json={"user_ids": ["u1", 1], "event": "api", "data": 5},
            headers={"Authorization": f"apikey {API_KEY}"},
        ) as answer,
    ):
        assert answer.status == 200, await answer.text()
    # other publishers than the marker's: wait for what must arrive, then for quiet
    await events(other, "sync")
    for tab in tabs:
        await events(tab, "api")
    await quiet(everyone, publisher)
    assert other.named("sync") == [4]
    assert [c.named("api") for c in everyone] == [[5], [5], [5], [], []]
    assert [c.named("sync") for c in everyone] == [[], [], [], [4], []]


# -- reserved rooms ------------------------------------------------------------------------
async def test_no_one_but_the_gateway_puts_a_socket_in_a_user_room(
    two_gateways: list[GatewayProcess],
    clients: Clients,
    serve: Serve,
    publisher: Publisher,
    nats_server: EmbeddedNats,
    prefix: str,
) -> None:
    gwa, gwb = two_gateways  # no connect check: nobody has a user id
    router = Router()
    heard = hearing(router)
    await serve(router)
    # the client says it is u2, with info: nothing of it is taken
    faker = await clients.connect(gwa, auth={"user": "u2", "info": {"admin": True}, "sub": "u2"})
    notice = await asyncio.wait_for(heard.get(), WAIT_S)
    assert (notice.socket_id, notice.user_id, notice.info, notice.rooms) == (
        faker.sid,
        None,
        None,
        (),
    )
    bystander = await clients.connect(gwb)
    await publisher.sockets.join(bystander.sid, "lobby")

    with pytest.raises(ReservedRoom, match="sailcast:user:u2"):
        await publisher.sockets.join(faker.sid, "sailcast:user:u2")
    with pytest.raises(ReservedRoom):
        await publisher.sockets.leave(faker.sid, ["lobby", "sailcast:user:u2"])
    with pytest.raises(ReservedRoom):
        await publisher.sockets.add_room_members_to_rooms("lobby", "sailcast:user:u2")
    with pytest.raises(ReservedRoom):
        await publisher.sockets.remove_room_members_from_rooms("lobby", ["sailcast:anything"])

    # a raw NATS client, bypassing the publisher: the gateways refuse it themselves
    subjects = Subjects(prefix)
    nc = await nats.connect(nats_server.url)
    try:
        raw = await nc.request(
            subjects.socket(faker.sid), encode_request(Join(("sailcast:user:u2",))), timeout=5
        )
        refused = decode_reply(raw.data, Done)
        assert isinstance(refused, Refused)
        assert refused.error.value == "bad_request"
        assert "reserved" in (refused.message or "")
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(
            subjects.gateways,
            encode_request(AddMembers("lobby", ("sailcast:user:u2",))),
            reply=inbox,
        )
        answers = [decode_reply((await sub.next_msg(5)).data, Done) for _ in range(2)]
        assert {a.gw for a in answers if isinstance(a, Refused)} == {"gwa", "gwb"}
        assert {a.error.value for a in answers if isinstance(a, Refused)} == {"bad_request"}
    finally:
        await nc.close()

    assert set(await publisher.sockets.rooms(faker.sid)) == {faker.sid}
    assert set(await publisher.sockets.rooms(bystander.sid)) == {bystander.sid, "lobby"}
    await publisher.sockets.broadcast_to_user("u2", "dm", "for u2 only")
    await quiet([faker, bystander], publisher)
    assert faker.events == bystander.events == []
    assert gwa.metric("sailcast_gateway_sockets_with_user") == 0


# -- the after_connect hook ----------------------------------------------------------------
async def test_after_connect_reaches_exactly_one_of_two_workers_once(
    two_gateways: list[GatewayProcess], clients: Clients, serve: Serve
) -> None:
    told: list[tuple[int, str]] = []
    changed = asyncio.Event()
    for worker in (1, 2):
        router = Router()

        @router.after_connect
        async def came(c: Connected, _worker: int = worker) -> None:
            told.append((_worker, c.socket_id))
            changed.set()

        await serve(router)
    sids = [(await clients.connect(two_gateways[i % 2])).sid for i in range(8)]
    deadline = time.monotonic() + WAIT_S
    while len(told) < len(sids):
        assert time.monotonic() < deadline, told
        changed.clear()
        await asyncio.wait_for(changed.wait(), WAIT_S)
    await asyncio.sleep(0.3)  # nothing more comes: no second worker, no second notice
    assert sorted(sid for _, sid in told) == sorted(sids)
    sent = sum(
        gw.metric('sailcast_gateway_after_connect_notices_total{outcome="sent"}')
        for gw in two_gateways
    )
    assert sent == len(sids)
