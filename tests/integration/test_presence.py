"""Presence events across real gateway processes on a real nats-server, with real
python-socketio clients: every member's view (its `presence_state`, then each
`presence` diff applied) ends equal to the room's true members, under churn too;
count-only rooms; a SIGKILLed gateway's members leave within the bound.

Most sockets here are anonymous (each its own presence key, `user_id: null`); the users'
tests connect with a JWT naming the user (`sub`), its presence info and the presence
room to join at connect (gateway/connect_identity.py)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import socketio

from publisher import Publisher
from tests.helpers import GatewayProcess, RecordingClient

pytestmark = pytest.mark.integration

Connect = Callable[..., Any]
HEARTBEAT_S = 0.5
PRESENCE = {
    "presence": "chat:*",
    "presence_count_only": "stadium:*",
    "presence_interval_s": "0.1",
    "presence_count_interval_s": "0.5",
    "heartbeat_interval_s": str(HEARTBEAT_S),
}
DEAD_BOUND_S = 4 * HEARTBEAT_S + 0.1 + 1.0
"""Peers' TTL (3 heartbeats) + one sweep (a heartbeat) + a window, and 1 s of slack
for a loaded machine."""


SECRET = "a-presence-test-secret-of-reasonable-length-0123"
JWT = {
    "before_connect": "jwt",
    "jwt_secret": SECRET,
    "jwt_rooms_claim": "rooms",
    "jwt_info_claim": "profile",
}


async def connect_as(gw: GatewayProcess, user: str, *rooms: str) -> RecordingClient:
    """A real client whose JWT names its user, presence info and rooms at connect."""
    body = {"exp": int(time.time()) + 300, "sub": user, "profile": {"name": user.title()}}
    body["rooms"] = list(rooms)
    client = socketio.AsyncClient(reconnection=False)
    rc = RecordingClient(client)

    async def on_any(event: str, *args: Any) -> None:
        rc.events.append((event, args[0] if len(args) == 1 else list(args)))
        rc._changed.set()

    client.on("*", on_any)
    auth = {"token": jwt.encode(body, SECRET, algorithm="HS256")}
    await client.connect(gw.url, auth=auth, transports=["websocket"], wait_timeout=10)
    return rc


def user_events(client: RecordingClient, room: str, field: str) -> list[str]:
    return [
        str(m["user_id"])
        for name, p in client.events
        if name == "presence" and p["room"] == room
        for m in p[field]
    ]


def view(client: RecordingClient, room: str) -> set[str]:
    """The members a client knows: its last state, then every diff after it."""
    members: set[str] = set()
    for name, payload in client.events:
        if not isinstance(payload, dict) or payload.get("room") != room:
            continue
        if name == "presence_state":
            members = {_key(m) for m in payload["members"]}
        elif name == "presence":
            members -= {_key(m) for m in payload["leaves"]}
            members |= {_key(m) for m in payload["joins"]}
    return members


def _key(m: dict[str, Any]) -> str:
    return str(m["user_id"]) if m["user_id"] is not None else str(m["socket_id"])


async def converge(
    clients: list[RecordingClient], room: str, truth: set[str], timeout: float = 8.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        views = {c.sid: view(c, room) for c in clients}
        if all(v == truth for v in views.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"views never converged to {sorted(truth)}: {views}")
        await asyncio.sleep(0.05)


async def test_every_members_view_across_three_gateways_equals_the_truth(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    gws = [gateway_factory(f"gw{i}", **PRESENCE) for i in range(3)]
    clients = [await client_factory(gws[i % 3]) for i in range(6)]
    for c in clients:
        await publisher.sockets.join(c.sid, "chat:1")
    await converge(clients, "chat:1", {c.sid for c in clients})
    # one leaves by request, one disconnects: both leave everyone's view
    await publisher.sockets.leave(clients[0].sid, "chat:1")
    await clients[1].disconnect()
    rest = clients[2:]
    await converge(rest, "chat:1", {c.sid for c in rest})
    # nobody was announced twice
    for c in rest:
        joined = [_key(j) for n, p in c.events if n == "presence" for j in p["joins"]]
        assert len(joined) == len(set(joined))


async def test_churn_is_coalesced_and_the_final_views_are_true(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    gws = [gateway_factory(f"gw{i}", **PRESENCE) for i in range(2)]
    watchers = [await client_factory(gws[i]) for i in range(2)]
    for w in watchers:
        await publisher.sockets.join(w.sid, "chat:churn")
    churners = [await client_factory(gws[i % 2]) for i in range(10)]
    for _ in range(5):  # each round: everybody in, then out, faster than a window
        for c in churners:
            await publisher.sockets.join(c.sid, "chat:churn")
        for c in churners:
            await publisher.sockets.leave(c.sid, "chat:churn")
    stayers = churners[:3]
    for c in stayers:
        await publisher.sockets.join(c.sid, "chat:churn")
    everyone = watchers + stayers
    await converge(everyone, "chat:churn", {c.sid for c in everyone})
    coalesced = sum(gw.metric("sailcast_gateway_presence_coalesced_total") for gw in gws)
    announced = sum(gw.metric('sailcast_gateway_presence_events_total{kind="join"}') for gw in gws)
    assert coalesced > 0
    assert announced < 2 * 50  # 50 joins each seen by both gateways were churned


async def test_count_only_rooms_get_counts(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    gws = [gateway_factory(f"gw{i}", **PRESENCE) for i in range(2)]
    clients = [await client_factory(gws[i % 2]) for i in range(5)]
    for c in clients:
        await publisher.sockets.join(c.sid, "stadium:1")

    def last_count(c: RecordingClient) -> Any:
        counts = c.named("presence_count")
        return counts[-1] if counts else None

    want = {"room": "stadium:1", "sockets": 5, "users": 0}
    for c in clients:
        await c.wait_for(lambda _e, c=c: last_count(c) == want, timeout=8)
    await clients[4].disconnect()
    want = {"room": "stadium:1", "sockets": 4, "users": 0}
    for c in clients[:4]:
        await c.wait_for(lambda _e, c=c: last_count(c) == want, timeout=8)
        assert c.named("presence") == c.named("presence_state") == []


async def test_a_sigkilled_gateways_members_leave_within_the_bound(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a, b = gateway_factory("gwa", **PRESENCE), gateway_factory("gwb", **PRESENCE)
    watcher = await client_factory(a)
    doomed = [await client_factory(b) for _ in range(3)]
    for c in [watcher, *doomed]:
        await publisher.sockets.join(c.sid, "chat:kill")
    await converge([watcher], "chat:kill", {watcher.sid, *(c.sid for c in doomed)})
    b.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await converge([watcher], "chat:kill", {watcher.sid}, timeout=DEAD_BOUND_S + 2)
    took = time.monotonic() - killed
    assert took <= DEAD_BOUND_S, f"leaves took {took:.2f}s, bound {DEAD_BOUND_S:.2f}s"


async def test_a_users_second_tab_on_another_gateway_is_not_a_second_join(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    a = gateway_factory("gwa", **PRESENCE, **JWT)
    b = gateway_factory("gwb", **PRESENCE, **JWT)
    made: list[RecordingClient] = []
    try:
        ann = await connect_as(a, "ann", "chat:tabs")
        bob = await connect_as(b, "bob", "chat:tabs")
        made += [ann, bob]
        await converge([ann, bob], "chat:tabs", {"ann", "bob"})
        assert {"user_id": "ann", "info": {"name": "Ann"}} in [
            m
            for n, p in bob.events
            if n in ("presence", "presence_state")
            for m in p.get("joins", p.get("members", []))
        ]
        ann2 = await connect_as(b, "ann", "chat:tabs")  # Ann's second tab, on gwb
        made.append(ann2)
        await converge([ann, bob, ann2], "chat:tabs", {"ann", "bob"})
        await ann.disconnect()  # her first tab goes: she is still here
        await asyncio.sleep(1.0)  # several windows on both gateways
        assert user_events(bob, "chat:tabs", "leaves") == []
        await ann2.disconnect()  # her last tab: now she leaves, once
        await converge([bob], "chat:tabs", {"bob"})
        assert user_events(bob, "chat:tabs", "leaves") == ["ann"]
        assert user_events(bob, "chat:tabs", "joins").count("ann") <= 1
    finally:
        for c in made:
            await c.disconnect()
