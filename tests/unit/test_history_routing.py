"""How a publisher routes a broadcast once it knows the history rules: pure (the
prepared messages), no NATS."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from publisher.sockets import MSG_ID_HEADER, Sockets
from shared.envelope import KIND_BROADCAST, KIND_MULTI_ROOM, MULTI_ROOM_MIN_ROOMS, decode_data
from shared.errors import InvalidRoomName, UsageError
from shared.history import HistoryRules
from shared.subjects import Subjects

S = Subjects("t")


def sockets(rules: str = "chat:*=10/1m") -> Sockets:
    s = Sockets(SimpleNamespace(subjects=S, max_payload_bytes=1 << 20))
    s.use_history(HistoryRules.parse(rules))
    return s


def test_a_history_room_gets_a_stored_copy_and_other_rooms_the_core_path() -> None:
    s = sockets()
    ((subject, body, headers),) = s.prepare_broadcast("chat:1", "ev", 1)
    assert (subject, headers) == (S.history("chat:1"), {})
    assert decode_data(body).rooms == ("chat:1",)
    assert s.prepare_broadcast("lobby", "ev", 1)[0][::2] == (S.room("lobby"), None)
    assert s.prepare_blast("ev", 1)[0][::2] == (S.blast, None)  # never stored


def test_msg_id_is_the_header_and_per_room_with_several_rooms() -> None:
    s = sockets()
    ((_, _, headers),) = s.prepare_broadcast("chat:1", "ev", 1, msg_id="order-42")
    assert headers == {MSG_ID_HEADER: "order-42"}
    out = s.prepare_broadcast(["chat:1", "lobby", "chat:2"], "ev", 1, msg_id="k")
    assert [(subj, hdr) for subj, _, hdr in out] == [
        (S.history("chat:1"), {MSG_ID_HEADER: "k:chat:1"}),
        (S.history("chat:2"), {MSG_ID_HEADER: "k:chat:2"}),
        (S.room("lobby"), None),  # a core room has no duplicate window
    ]
    # one body for every copy, history rooms listed first
    assert len({id(body) for _, body, _ in out}) == 1
    assert decode_data(out[0][1]).rooms == ("chat:1", "chat:2", "lobby")


@pytest.mark.parametrize("bad", ["", "two\nlines", "cr\r", 42])
def test_a_bad_msg_id_raises_before_anything_is_sent(bad: object) -> None:
    with pytest.raises(UsageError, match="msg_id"):
        sockets().prepare_broadcast("chat:1", "ev", 1, msg_id=bad)  # type: ignore[arg-type]


def test_many_core_rooms_stay_one_message_and_the_copies_list_them_first() -> None:
    s = sockets()
    core = [f"r{i}" for i in range(MULTI_ROOM_MIN_ROOMS)]
    out = s.prepare_broadcast(["chat:1", *core, "chat:2"], "ev", 1, omit="x")
    assert [subj for subj, _, _ in out] == [S.multi_room, S.history("chat:1"), S.history("chat:2")]
    multi, copy = decode_data(out[0][1]), decode_data(out[1][1])
    assert (multi.kind, multi.rooms, multi.omit) == (KIND_MULTI_ROOM, tuple(core), frozenset({"x"}))
    assert (copy.kind, copy.rooms, copy.omit) == (
        KIND_BROADCAST,
        (*core, "chat:1", "chat:2"),
        frozenset({"x"}),
    )


def test_without_rules_nothing_changes_and_new_rules_take_effect_at_once() -> None:
    s = sockets("")
    assert s.prepare_broadcast("chat:1", "ev", 1)[0][::2] == (S.room("chat:1"), None)
    s.use_history(HistoryRules.parse("*=5/30s"))
    assert s.prepare_broadcast("chat:1", "ev", 1)[0][0] == S.history("chat:1")
    s.use_history(HistoryRules())
    assert s.prepare_broadcast("chat:1", "ev", 1)[0][0] == S.room("chat:1")


def test_bad_room_names_are_refused_on_the_history_path_too() -> None:
    s = sockets("*=5/30s")
    with pytest.raises(InvalidRoomName):
        s.prepare_broadcast("", "ev", 1)
    with pytest.raises(InvalidRoomName):
        s.prepare_broadcast(["ok", "x" * 2000], "ev", 1)
