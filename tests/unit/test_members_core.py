"""A gateway's part of members and counts (gateway/node.py), on a MemoryBroker: what it
answers on its own subject and on a socket's, with users and presence info from
`Gateway.identities` (set at admission by the identity part of issue 12)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from gateway.identities import Identity
from gateway.node import Gateway
from shared.control import (
    Count,
    CountOf,
    ErrorCode,
    Join,
    Member,
    Members,
    MembersOf,
    Refused,
    decode_reply,
    encode_request,
)
from tests.unit.test_gateway_core import Cluster, S

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(stack)


async def ask(c: Cluster, subject: str, req: Members | Count) -> MembersOf | CountOf | Refused:
    body = await c.worker.request(subject, encode_request(req), timeout=1.0)
    if isinstance(req, Members):
        return decode_reply(body, MembersOf)
    return decode_reply(body, CountOf)


async def populate(c: Cluster) -> tuple[Gateway, Gateway]:
    """User 42 with a tab on each gateway, user 7 with two tabs on gw1, one anonymous."""
    g1, g2 = await c.gateway("gw1"), await c.gateway("gw2")
    for gw, sid, uid in (
        (g1, "s3", "42"),
        (g1, "s1", "7"),
        (g1, "s2", "7"),
        (g1, "s4", None),
        (g2, "s9", "42"),
    ):
        await c.connect(gw, sid)
        if uid is not None:
            gw.identities.assign(sid, Identity(uid, {"name": f"u{uid}"}))
        await c.ask(sid, Join(("lobby",)))
    return g1, g2


async def test_members_are_sorted_with_their_identity_and_paged_by_socket_id(
    cluster: Cluster,
) -> None:
    await populate(cluster)
    first = await ask(cluster, S.gateway("gw1"), Members("lobby", None, 3))
    assert first == MembersOf(
        "gw1",
        (
            Member("s1", "7", {"name": "u7"}),
            Member("s2", "7", {"name": "u7"}),
            Member("s3", "42", {"name": "u42"}),
        ),
        more=True,
    )
    rest = await ask(cluster, S.gateway("gw1"), Members("lobby", "s3", 3))
    assert rest == MembersOf("gw1", (Member("s4"),), more=False)
    assert await ask(cluster, S.gateway("gw2"), Members("lobby")) == MembersOf(
        "gw2", (Member("s9", "42", {"name": "u42"}),)
    )


async def test_counts_give_sockets_and_distinct_users_per_gateway(cluster: Cluster) -> None:
    await populate(cluster)
    one = await ask(cluster, S.gateway("gw1"), Count("lobby"))
    two = await ask(cluster, S.gateway("gw2"), Count("lobby"))
    assert one == CountOf("gw1", 4, ("42", "7"))
    assert two == CountOf("gw2", 1, ("42",))
    assert isinstance(one, CountOf)
    assert isinstance(two, CountOf)
    assert len(set(one.users) | set(two.users)) == 2  # a user's two tabs are one user
    assert await ask(cluster, S.gateway("gw2"), Count("empty")) == CountOf("gw2", 0, ())


async def test_a_sockets_own_room_is_answered_on_its_subject(cluster: Cluster) -> None:
    g1, _ = await populate(cluster)
    assert await ask(cluster, S.socket("s4"), Members("s4")) == MembersOf("gw1", (Member("s4"),))
    assert await ask(cluster, S.socket("s1"), Count("s1")) == CountOf("gw1", 1, ("7",))
    assert g1.metrics.presence_queries.labels("members", "ok")._value.get() == 1


async def test_members_and_count_are_not_cluster_requests(cluster: Cluster) -> None:
    await populate(cluster)
    answers = await cluster.ask_all(Count("lobby"), 2)
    assert all(isinstance(a, Refused) and a.error is ErrorCode.UNKNOWN_KIND for a in answers)
