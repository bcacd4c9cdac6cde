"""A worker's disconnect with a reason, seen by the npm clients (issue 12): socket.io-client
4 and sails.io.js 1.2.1 (on socket.io-client 2.0.3 and 4), on websocket and on polling,
connected to two real gateway processes. Each gets the event `sailcast:disconnect`
`{"reason": …}` as an ordinary event, then its `disconnect` with socket.io's
"io server disconnect" (so it does not reconnect by itself); a v4 client with
recovery on that connects again gets a fresh session (the disconnect was a goodbye).

The client is tests/e2e/js/disconnect_client.js, read line by line
(tests/recovery_harness.NodeClient); install it with `bash tests/e2e/setup.sh`."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import jwt
import pytest

from publisher import Publisher
from tests.helpers import GatewayProcess
from tests.recovery_harness import JS_DIR, NodeClient

pytestmark = pytest.mark.e2e

SERVER_DISCONNECT: Final = "io server disconnect"
HISTORY: Final = {"history": "chat*=100/2m", "history_storage": "memory"}
SECRET: Final = "disconnect-secret-disconnect-secret-0"
JWT: Final = {"before_connect": "jwt", "jwt_secret": SECRET}
SESSION_WRITTEN_S: Final = 0.4
"""Longer than the session store's coalescing (0.1 s) and a KV round trip."""

Start = Callable[..., Awaitable[NodeClient]]


@pytest.fixture
async def npm_client() -> AsyncIterator[Start]:
    made: list[NodeClient] = []

    async def start(url: str, stack: str, transports: str, token: str = "-") -> NodeClient:
        node = shutil.which("node")
        if node is None or not (JS_DIR / "node_modules" / "socket.io-client-v4").is_dir():
            pytest.fail("the npm clients are missing: run `bash tests/e2e/setup.sh` (needs node)")
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "disconnect_client.js"),
            url,
            stack,
            transports,
            token,
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = NodeClient(proc)
        made.append(client)
        return client

    yield start
    for c in made:
        await c.close()


async def told(client: NodeClient, reason: str) -> None:
    """The client got the reason as an event, then its disconnect, and nothing else."""
    start = len(client.steps)
    gone = await client.next("disconnect")
    assert gone["reason"] == SERVER_DISCONNECT
    assert client.steps[start:] == [
        {"step": "event", "event": "sailcast:disconnect", "args": [{"reason": reason}]},
        gone,
    ]


STACKS: Final = [
    pytest.param("v4", "websocket", id="sio4-websocket"),
    pytest.param("v4", "polling", id="sio4-polling"),
    pytest.param("sails-sio2", "websocket", id="sails.io.js+sio2-websocket"),
    pytest.param("sails-sio2", "polling", id="sails.io.js+sio2-polling"),
    pytest.param("sails-v4", "websocket", id="sails.io.js+sio4-websocket"),
]


@pytest.mark.parametrize(("stack", "transports"), STACKS)
async def test_the_client_sees_the_reason_then_is_disconnected(
    two_gateways: list[GatewayProcess],
    publisher: Publisher,
    npm_client: Start,
    stack: str,
    transports: str,
) -> None:
    """By socket ids, one client on each gateway; a third client stays connected."""
    gwa, gwb = two_gateways
    a = await npm_client(gwa.url, stack, transports)
    b = await npm_client(gwb.url, stack, transports)
    stays = await npm_client(gwb.url, stack, transports)
    ids = [(await c.next("connect"))["id"] for c in (a, b, stays)]
    assert a.steps[0]["transport"] == transports
    n = await publisher.sockets.disconnect(ids[:2], reason=f"bye from {stack}")
    assert n == 2
    for c in (a, b):
        await told(c, f"bye from {stack}")
    await publisher.sockets.broadcast(ids[2], "m", {"n": 1})
    assert (await stays.next("event"))["args"] == [{"n": 1}]
    assert [s["step"] for s in stays.steps] == ["connect", "event"]


async def test_by_room_reaches_members_of_every_stack_on_both_gateways_only(
    two_gateways: list[GatewayProcess], publisher: Publisher, npm_client: Start
) -> None:
    gwa, gwb = two_gateways
    members = [
        await npm_client(gwa.url, "v4", "websocket"),
        await npm_client(gwb.url, "v4", "polling"),
        await npm_client(gwa.url, "sails-sio2", "polling"),
        await npm_client(gwb.url, "sails-sio2", "websocket"),
        await npm_client(gwb.url, "sails-v4", "websocket"),
    ]
    others = [
        await npm_client(gwa.url, "v4", "websocket"),
        await npm_client(gwb.url, "sails-sio2", "websocket"),
    ]
    member_ids = [(await c.next("connect"))["id"] for c in members]
    other_ids = [(await c.next("connect"))["id"] for c in others]
    await publisher.sockets.join(member_ids, "team:blue")
    await publisher.sockets.join(other_ids, "team:red")
    assert await publisher.sockets.disconnect(room="team:blue", reason="team disbanded") == 5
    for c in members:
        await told(c, "team disbanded")
    await publisher.sockets.broadcast("team:red", "m", {"n": 2})
    for c in others:
        assert (await c.next("event"))["args"] == [{"n": 2}]
        assert [s["step"] for s in c.steps] == ["connect", "event"]


def token(user: str) -> str:
    claims = {"sub": user, "exp": int(time.time()) + 300}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_by_user_reaches_every_tab_of_that_user_on_both_gateways_only(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, npm_client: Start
) -> None:
    """Each client's JWT `sub` puts it in its user room at connect (docs/presence.md)."""
    gwa, gwb = gateway_factory("gwa", **JWT), gateway_factory("gwb", **JWT)
    tabs = [
        await npm_client(gwa.url, "v4", "websocket", token("ann")),
        await npm_client(gwb.url, "v4", "polling", token("ann")),
        await npm_client(gwb.url, "sails-sio2", "websocket", token("ann")),
    ]
    bob = await npm_client(gwa.url, "v4", "websocket", token("bob"))
    for c in (*tabs, bob):
        await c.next("connect")
    assert await publisher.sockets.disconnect(user_id="ann", reason="password changed") == 3
    for c in tabs:
        await told(c, "password changed")
    await publisher.sockets.broadcast_to_user("bob", "m", {"n": 5})
    assert (await bob.next("event"))["args"] == [{"n": 5}]
    assert [s["step"] for s in bob.steps] == ["connect", "event"]


async def test_a_v4_client_with_recovery_on_gets_a_fresh_session_after_it(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, npm_client: Start
) -> None:
    """A worker's disconnect is a goodbye, as the client's own is: the session ends, so
    the same client connecting again is not recovered (new id, no rooms, no replay)."""
    gw = gateway_factory("gwa", **HISTORY)
    client = await npm_client(gw.url, "v4", "websocket")
    first = await client.next("connect")
    assert first["recovered"] is False
    await publisher.sockets.join(first["id"], "chat")
    await asyncio.sleep(SESSION_WRITTEN_S)  # the session record has the room
    await publisher.sockets.disconnect(first["id"], reason="signed out elsewhere")
    await told(client, "signed out elsewhere")
    await publisher.sockets.broadcast("chat", "m", {"n": 3})  # missed, and not replayed
    client.command("reconnect")
    back = await client.next("connect")
    assert back["recovered"] is False
    assert back["id"] != first["id"]
    assert await publisher.sockets.rooms(back["id"]) == [back["id"]]
    await publisher.sockets.broadcast(back["id"], "m", {"n": 4})
    event: dict[str, Any] = await client.next("event")
    assert event["args"][0] == {"n": 4}
