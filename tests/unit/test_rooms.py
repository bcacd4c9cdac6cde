"""Local membership bookkeeping: when a room gains its first / loses its last member."""

from __future__ import annotations

import pytest

from gateway.rooms import LocalRooms


def test_first_join_and_last_leave_are_reported() -> None:
    r = LocalRooms()
    r.add_socket("a")
    r.add_socket("b")
    assert r.join("a", "lobby") is True
    assert r.join("b", "lobby") is False
    assert r.join("a", "lobby") is False
    assert r.leave("a", "lobby") is False
    assert r.leave("a", "lobby") is False
    assert r.leave("b", "lobby") is True
    assert r.room_count == 0


def test_removing_a_socket_lists_the_rooms_it_emptied() -> None:
    r = LocalRooms()
    for s in ("a", "b"):
        r.add_socket(s)
        r.join(s, s)
    r.join("a", "x")
    r.join("a", "y")
    r.join("b", "y")
    assert sorted(r.remove_socket("a")) == ["a", "x"]
    assert r.members("y") == {"b"}
    assert r.rooms_of("a") == frozenset()
    assert not r.has_socket("a")


def test_unknown_socket_cannot_join() -> None:
    with pytest.raises(KeyError):
        LocalRooms().join("ghost", "x")
