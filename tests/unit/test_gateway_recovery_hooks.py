"""The core's part of recovery (gateway/node.py), on MemoryBroker with recording
connections: membership changes reach `on_membership` (the session store's feed), an
`evict` request closes the socket without a disconnect and releases its subject at
once, and a recovering socket's rooms are subscribed before it is a member of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack

import pytest

from shared.control import Done, ErrorCode, Evict, Join, Leave, Refused
from tests.unit.fakes import RecordingConnection
from tests.unit.test_gateway_core import Cluster, S, received, settle


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(stack)


async def test_joins_and_leaves_are_told_once_each(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    told: list[tuple[str, list[str], list[str]]] = []

    def membership(sid: str, joined: Collection[str], left: Collection[str]) -> None:
        told.append((sid, sorted(joined), sorted(left)))

    gw.on_membership = membership
    await cluster.connect(gw, "a")
    assert isinstance(await cluster.ask("a", Join(("r1", "r2"))), Done)
    assert isinstance(await cluster.ask("a", Join(("r1",))), Done)  # already in: nothing
    assert isinstance(await cluster.ask("a", Leave(("r2", "nowhere"))), Done)
    assert told == [("a", ["r1", "r2"], []), ("a", [], ["r2"])]


async def test_an_evicted_socket_is_gone_without_a_disconnect(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    evicted: list[str] = []
    gw.on_evicted = evicted.append
    conn = await cluster.connect(gw, "a")
    await cluster.ask("a", Join(("r1",)))
    assert isinstance(await cluster.ask("a", Evict()), Done)
    await settle()
    assert conn.evicted
    assert not conn.disconnected
    assert evicted == ["a"]
    assert gw.connection("a") is None
    # its subject goes at once (no linger): the socket's new holder alone answers
    await cluster.linger(0)
    assert not cluster.subscribed(S.socket("a"))


async def test_evict_of_an_unknown_socket_is_refused(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    await cluster.connect(gw, "a")
    await gw.socket_disconnected("a")  # its subject lingers a moment: the refusal comes
    answer = await cluster.ask("a", Evict())
    assert isinstance(answer, Refused)
    assert answer.error is ErrorCode.NO_SUCH_SOCKET


async def test_a_recovering_socket_hears_nothing_until_it_joins(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    conn = RecordingConnection("old")
    await gw.socket_connected(conn, join_own_room=False)
    await gw.subscribe_rooms(["r1"])
    assert cluster.subscribed(S.room("r1"))
    assert cluster.subscribed(S.room("old"))  # its own room's subject, not membership
    await cluster.broadcast(["r1"], "before", 1)
    await cluster.broadcast(["old"], "before", 2)
    await settle()
    assert received(conn) == []
    gw.join_restored("old", ["old", "r1"])
    await cluster.broadcast(["r1"], "after", 3)
    await cluster.broadcast(["old"], "after", 4)
    await settle()
    assert received(conn) == [["after", 3], ["after", 4]]
