"""The room directory's names and the members cursor (shared/directory.py), and paging
(publisher.members.merge_page) against gateways that answer as gateway/node.py does:
a member present for the whole paging is seen exactly once, whatever churn between
pages, and pages come in (gateway, socket id) order."""

from __future__ import annotations

from bisect import bisect_right

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from publisher.members import merge_page
from shared.control import Member, MembersOf
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
    """What a gateway answers (gateway/node.py `_presence_answer`); `cut` stands for
    the reply-size bound, which may stop a page before `limit`."""
    ordered = sorted(sids)
    start = bisect_right(ordered, after) if after is not None else 0
    rest = ordered[start:]
    n = min(limit, cut)
    return MembersOf(gw, tuple(Member(s) for s in rest[:n]), more=len(rest) > n)


def ask(
    cluster: dict[str, set[str]], after: Position | None, limit: int, cut: int
) -> dict[str, MembersOf]:
    """The publisher's requests: gateways after the cursor's from the start, the
    cursor's own after its socket id, none before."""
    out: dict[str, MembersOf] = {}
    for gw, sids in cluster.items():
        if after is not None and gw < after.gateway_id:
            continue
        since = after.socket_id if after is not None and gw == after.gateway_id else None
        out[gw] = answer(gw, sids, since, limit, cut)
    return out


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
    cluster: dict[str, set[str]], limit: int, cut: int, churn: list[tuple[bool, str, str]]
) -> None:
    stayers = {(gw, s) for gw, sids in cluster.items() for s in sids}
    seen: list[tuple[str, str]] = []
    after: Position | None = None
    steps = 0
    while True:
        page, last = merge_page(ask(cluster, after, limit, cut), after, limit)
        assert len(page) <= limit
        gw_of = {s: gw for gw, sids in cluster.items() for s in sids}
        seen.extend((gw_of[m.socket_id], m.socket_id) for m in page)
        if last is None:
            break
        after = last
        steps += 1
        assert steps < 1000
        if churn:  # between pages, one member joins or leaves
            join, gw, sid = churn.pop()
            if join and not any(sid in sids for sids in cluster.values()):
                cluster.setdefault(gw, set()).add(sid)
            elif gw in cluster and sid in cluster[gw]:
                cluster[gw].discard(sid)
                stayers.discard((gw, sid))
    assert len(seen) == len(set(seen)), "a member was repeated"
    assert stayers <= set(seen), "a member present throughout was skipped"
    assert seen == sorted(seen)
