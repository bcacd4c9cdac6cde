"""bench/presence/views.py: a member's view of a presence room, rebuilt from the events it
received, and the check of every final view against the truth the benchmark kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.presence.people import percentile, user_of
from bench.presence.views import Truth, View, mismatch, mismatches


def as_dict(v: View) -> dict[str, object]:
    return {"users": sorted(v.users), "sockets": v.sockets, "user_count": v.user_count}


def test_state_replaces_the_view_and_diffs_change_it() -> None:
    v = View()
    v.apply("presence", {"room": "r", "joins": [{"user_id": "stale"}], "leaves": []})
    v.apply("presence_state", {"room": "r", "members": [{"user_id": "a"}, {"user_id": "b"}]})
    assert v.users == {"a", "b"}
    v.apply(
        "presence",
        {"room": "r", "joins": [{"user_id": "c", "info": {}}], "leaves": [{"user_id": "a"}]},
    )
    assert v.users == {"b", "c"}
    assert (v.events, v.states, v.deltas) == (2, 1, 3)


def test_a_user_who_left_and_came_back_within_one_diff_is_present() -> None:
    v = View()
    v.apply("presence_state", {"room": "r", "members": [{"user_id": "a"}]})
    v.apply("presence", {"room": "r", "joins": [{"user_id": "a"}], "leaves": [{"user_id": "a"}]})
    assert v.users == {"a"}


def test_count_events_set_the_counts_and_bad_shapes_are_counted_not_raised() -> None:
    v = View()
    v.apply("presence_count", {"room": "r", "sockets": 5, "users": 4})
    assert (v.sockets, v.user_count, v.counts) == (5, 4, 1)
    v.apply("presence_count", {"room": "r", "sockets": "5"})
    v.apply("presence_state", {"room": "r", "members": None})
    v.apply("presence", ["not", "an", "object"])
    assert v.malformed == 3
    assert (v.sockets, v.user_count) == (5, 4)


def test_a_view_matches_the_truth_by_user_not_by_socket() -> None:
    truth = Truth.of({"s1": "a", "s2": "a", "s3": "b"})
    assert truth.sockets == 3
    assert mismatch({"users": ["a", "b"]}, truth, count_only=False) is None
    why = mismatch({"users": ["a", "c"]}, truth, count_only=False)
    assert why is not None
    assert "missing ['b']" in why
    assert "extra ['c']" in why
    assert mismatch({"sockets": 3, "user_count": 2}, truth, count_only=True) is None
    assert mismatch({"sockets": 2, "user_count": 2}, truth, count_only=True) is not None


def test_every_member_is_checked_and_one_without_a_view_is_a_mismatch() -> None:
    truth = Truth.of({"s1": "a", "s2": "b"})
    views: dict[str, dict[str, list[str]]] = {"s1": {"users": ["a", "b"]}, "s9": {"users": []}}
    bad = mismatches(views, truth, ["s1", "s2"], count_only=False)
    assert list(bad) == ["s2"]
    assert "no view" in bad["s2"]


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=60))
def test_replaying_per_user_diffs_after_a_state_reaches_the_truth(
    ops: list[tuple[bool, int]],
) -> None:
    """A gateway that sends a user's join when their first socket arrives and a leave
    when their last goes leaves every member with the truth."""
    inside: dict[str, int] = {}
    v = View()
    v.apply("presence_state", {"room": "r", "members": []})
    for join, n in ops:
        u = f"u{n}"
        if join:
            inside[u] = inside.get(u, 0) + 1
            if inside[u] == 1:
                v.apply("presence", {"room": "r", "joins": [{"user_id": u}], "leaves": []})
        elif inside.get(u):
            inside[u] -= 1
            if inside[u] == 0:
                v.apply("presence", {"room": "r", "joins": [], "leaves": [{"user_id": u}]})
    present = {u for u, n in inside.items() if n}
    assert (
        mismatch(as_dict(v), Truth(users=frozenset(present), sockets=0), count_only=False) is None
    )


def test_second_tabs_belong_to_the_previous_socket_on_another_server() -> None:
    assert user_of(0) == user_of(1) == "u0"
    assert user_of(2) == "u2"
    assert user_of(6) == "u5"
    assert (5 % 3) != (6 % 3)


def test_percentile_is_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
