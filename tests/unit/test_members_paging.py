"""The room directory's names and the members cursor (shared/directory.py), and paging
(publisher.members.walk_page) against gateways that answer as gateway/members.py does:
a member present for the whole paging is seen exactly once, whatever churn between
pages, pages come in (gateway, socket id) order, and a listing moves each member about
once (holders asked in cursor order, each for what the page still lacks)."""

from __future__ import annotations

import asyncio
from bisect import bisect_right

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from publisher.members import walk_page
from shared.control import Member, Members, MembersOf
from shared.directory import (
    InvalidCursor,
    Position,
    decode_cursor,
    directory_stream,
    encode_cursor,
    entry_subject,
    gateway_filter,
    gateway_of,
    holders_filter,
)
from shared.subjects import room_name

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_", min_size=1, max_size=12)
rooms = st.text(min_size=1, max_size=30).filter(
    lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
)


@given(ids, st.text(min_size=1, max_size=40))
def test_cursors_round_trip(gw: str, sid: str) -> None:
    position = Position(gw, sid)
    cursor = encode_cursor(position)
    assert cursor.isascii()
    assert "=" not in cursor
    assert decode_cursor(cursor) == position


@pytest.mark.parametrize(
    "junk", ["", "junk!", "bm9wZQ", encode_cursor(Position("g", "s"))[:-2], "W10", "x" * 3000]
)
def test_anything_else_is_an_invalid_cursor(junk: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(junk)


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching with `*` (one token)."""
    p, s = pattern.split("."), subject.split(".")
    return len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s, strict=True))


@given(rooms, ids, rooms, ids)
def test_entry_subjects_name_their_gateway_and_match_only_their_room(
    room: str, gw: str, other_room: str, other_gw: str
) -> None:
    subject = entry_subject("sc.x", room, gw)
    assert gateway_of(subject) == gw
    assert room_name(subject.split(".")[3]) == room
    assert _matches(holders_filter("sc.x", room), subject)
    assert _matches(gateway_filter("sc.x", gw), subject)
    assert _matches(holders_filter("sc.x", other_room), subject) == (other_room == room)
    assert _matches(gateway_filter("sc.x", other_gw), subject) == (other_gw == gw)
    assert directory_stream("sc.x") == "sailcast_directory_sc_x"


def answer(gw: str, sids: set[str], after: str | None, limit: int, cut: int) -> MembersOf:
    """What a gateway answers (gateway/members.py `local_answer`); `cut` stands for
    the reply-size bound, which may stop a page before `limit`."""
    ordered = sorted(sids)
    start = bisect_right(ordered, after) if after is not None else 0
    rest = ordered[start:]
    n = min(limit, cut)
    return MembersOf(gw, tuple(Member(s) for s in rest[:n]), more=len(rest) > n)


class Cluster:
    """Gateways answering members requests from memory, recording what they moved;
    `silent` gateways do not answer in time, `gone` ones have no responder."""

    def __init__(self, members: dict[str, set[str]], cut: int) -> None:
        self.members = members
        self.cut = cut
        self.silent: set[str] = set()
        self.gone: set[str] = set()
        self.asked: list[tuple[str, int]] = []
        self.moved = 0

    async def ask(self, gw: str, req: Members) -> MembersOf | str | None:
        self.asked.append((gw, req.limit))
        if gw in self.gone or gw not in self.members:
            return None
        if gw in self.silent:
            return gw
        reply = answer(gw, self.members[gw], req.after, req.limit, self.cut)
        self.moved += len(reply.members)
        return reply

    def page(
        self, after: Position | None, limit: int, *, partial: bool = False
    ) -> tuple[list[Member], Position | None, tuple[str, ...]]:
        holders = sorted(self.members)
        walk = asyncio.run(walk_page("r", holders, after, limit, self.ask, partial=partial))
        return walk.members, walk.last, walk.missing


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(ids, st.sets(ids, max_size=12), min_size=1, max_size=4).filter(
        lambda c: sum(len(v) for v in c.values()) == len(set().union(*c.values()))
    ),
    st.integers(1, 5),
    st.integers(1, 6),
    st.lists(st.tuples(st.booleans(), ids, ids), max_size=30),
)
def test_paging_under_churn_sees_every_stayer_once_in_order(
    members: dict[str, set[str]], limit: int, cut: int, churn: list[tuple[bool, str, str]]
) -> None:
    cluster = Cluster(members, cut)
    stayers = {(gw, s) for gw, sids in members.items() for s in sids}
    seen: list[tuple[str, str]] = []
    after: Position | None = None
    steps = 0
    while True:
        page, last, missing = cluster.page(after, limit)
        assert len(page) <= limit
        assert missing == ()
        gw_of = {s: gw for gw, sids in members.items() for s in sids}
        seen.extend((gw_of[m.socket_id], m.socket_id) for m in page)
        if last is None:
            break
        after = last
        steps += 1
        assert steps < 1000
        if churn:  # between pages, one member joins or leaves
            join, gw, sid = churn.pop()
            if join and not any(sid in sids for sids in members.values()):
                members.setdefault(gw, set()).add(sid)
            elif gw in members and sid in members[gw]:
                members[gw].discard(sid)
                stayers.discard((gw, sid))
    assert len(seen) == len(set(seen)), "a member was repeated"
    assert stayers <= set(seen), "a member present throughout was skipped"
    assert seen == sorted(seen)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(ids, st.integers(0, 40), min_size=1, max_size=5),
    st.integers(1, 15),
)
def test_a_listing_moves_each_member_once(sizes: dict[str, int], limit: int) -> None:
    members = {gw: {f"{gw}-{i:03}" for i in range(n)} for gw, n in sizes.items()}
    cluster = Cluster(members, cut=10**6)
    total = sum(sizes.values())
    after: Position | None = None
    listed = 0
    while True:
        page, last, _ = cluster.page(after, limit)
        listed += len(page)
        if last is None:
            break
        after = last
    assert listed == total
    assert cluster.moved == total  # each holder asked for at most what the page lacked


def test_one_round_trip_when_the_first_holder_fills_the_page() -> None:
    cluster = Cluster({"a": {f"s{i:02}" for i in range(30)}, "b": {"t1"}, "c": {"u1"}}, 10**6)
    page, last, _ = cluster.page(None, 10)
    assert [m.socket_id for m in page] == [f"s{i:02}" for i in range(10)]
    assert last == Position("a", "s09")
    assert cluster.asked == [("a", 10)]
    cluster.asked.clear()
    page, last, _ = cluster.page(Position("a", "s24"), 10)  # a: 5 left; b, c: 1 each
    assert [m.socket_id for m in page] == ["s25", "s26", "s27", "s28", "s29", "t1", "u1"]
    assert last is None
    assert cluster.asked == [("a", 10), ("b", 5), ("c", 4)]


def test_a_size_cut_answer_ends_the_page_at_that_holder() -> None:
    cluster = Cluster({"a": {"s1", "s2", "s3"}, "b": {"t1"}}, cut=2)
    page, last, _ = cluster.page(None, 10)
    assert [m.socket_id for m in page] == ["s1", "s2"]
    assert last == Position("a", "s2")
    assert cluster.asked == [("a", 10)]


def test_a_silent_holder_ends_the_walk_unless_partial_and_gone_ones_are_skipped() -> None:
    cluster = Cluster({"a": {"s1"}, "b": {"t1"}, "c": {"u1"}, "d": {"v1"}}, 10**6)
    cluster.silent.add("b")
    cluster.gone.add("c")
    page, last, missing = cluster.page(None, 10)
    assert ([m.socket_id for m in page], missing) == (["s1"], ("b",))
    assert [gw for gw, _ in cluster.asked] == ["a", "b"]
    page, last, missing = cluster.page(None, 10, partial=True)
    assert ([m.socket_id for m in page], last, missing) == (["s1", "v1"], None, ("b",))


def test_answers_in_hand_take_their_place_in_gateway_order() -> None:
    """The socket subject's answer (a room named after a socket) is not asked again
    and is merged in (gateway, socket id) order."""
    cluster = Cluster({"a": {"s1"}, "c": {"u1"}}, 10**6)
    walk = asyncio.run(
        walk_page(
            "r",
            ["a", "c"],
            None,
            10,
            cluster.ask,
            partial=False,
            answered={"b": MembersOf("b", (Member("t1"),))},
        )
    )
    assert [m.socket_id for m in walk.members] == ["s1", "t1", "u1"]
    assert [gw for gw, _ in cluster.asked] == ["a", "c"]
