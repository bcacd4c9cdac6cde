"""The presence CRDT (gateway.presence.state.RoomView) and the coalescer
(gateway.presence.local.LocalRoom.diff), pure: whatever order the holders' messages
arrive in, repeated or not, every view converges to the truth, and the members are told
each transition once (a join for a key they have, a leave for one they do not, never)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.presence.local import LocalRoom
from gateway.presence.rules import Mode
from gateway.presence.state import RoomView
from shared.presence import Fact, Info, PresenceDelta, PresenceState

Msg = PresenceDelta | PresenceState
KEYS = ["u:1", "u:2", "u:3", "s:a", "s:b"]


class Sender:
    """One holder as gateway.presence.service publishes: whole states (maybe in
    parts) and deltas, ordered by (inc, seq), each naming its previous seq."""

    def __init__(self, gw: str, inc: int = 1) -> None:
        self.gw, self.inc = gw, inc
        self.seq = self.prev = 0
        self.facts: dict[str, Info] = {}

    def _next(self) -> tuple[int, int]:
        self.seq += 1
        prev, self.prev = self.prev, self.seq
        return self.seq, prev

    def set(self, key: str, info: Info) -> list[Msg]:
        self.facts[key] = info
        seq, prev = self._next()
        return [PresenceDelta(self.gw, self.inc, seq, prev, len(self.facts), (Fact(key, info),))]

    def remove(self, key: str) -> list[Msg]:
        if key not in self.facts:
            return []
        del self.facts[key]
        seq, prev = self._next()
        return [PresenceDelta(self.gw, self.inc, seq, prev, len(self.facts), (), (key,))]

    def state(self, parts: int = 1, hello: bool = False) -> list[Msg]:
        items = [Fact(k, i) for k, i in self.facts.items()]
        parts = max(1, min(parts, len(items)))
        chunks = [items[n::parts] for n in range(parts)]
        out: list[Msg] = []
        for n, chunk in enumerate(chunks):
            seq, prev = self._next()
            out.append(
                PresenceState(
                    self.gw,
                    self.inc,
                    seq,
                    0 if n == 0 else prev,
                    len(self.facts),
                    tuple(chunk),
                    first=n == 0,
                    last=n == parts - 1,
                    hello=hello,
                )
            )
        return out


def truth(senders: list[Sender]) -> dict[str, Info]:
    out: dict[str, Info] = {}
    for s in sorted(senders, key=lambda s: s.gw, reverse=True):  # smallest gw wins
        out.update(s.facts)
    return out


infos = st.sampled_from([None, {"c": "red"}, {"c": "blue"}])
ops = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(KEYS), infos),
    st.tuples(st.just("remove"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("state"), st.integers(1, 3), st.none()),
)


class Client:
    """What one member sees: a state, then the diffs applied (joins are upserts)."""

    def __init__(self) -> None:
        self.view: dict[str, Info] = {}

    def apply(self, joins: list[dict[str, Any]], leaves: list[dict[str, Any]]) -> None:
        for entry in leaves:
            key = _key(entry)
            assert key in self.view, f"leave of {key} who was not there"
            del self.view[key]
        for entry in joins:
            key = _key(entry)
            assert self.view.get(key, "absent") != entry["info"], f"repeated join of {key}"
            self.view[key] = entry["info"]


def _key(entry: dict[str, Any]) -> str:
    return f"u:{entry['user_id']}" if entry["user_id"] is not None else f"s:{entry['socket_id']}"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_interleaving_with_repeats_converges_and_announces_once(data: st.DataObject) -> None:
    senders = [Sender(f"g{i}") for i in range(data.draw(st.integers(1, 3), label="holders"))]
    streams: list[list[Msg]] = []
    for s in senders:
        stream = s.state(hello=True)  # a new holder starts with its whole state
        for op, a, b in data.draw(st.lists(ops, max_size=12)):
            if op == "set":
                stream += s.set(str(a), b)
            elif op == "remove":
                stream += s.remove(str(a))
            else:
                stream += s.state(parts=int(a))
        streams.append(stream)
    local = LocalRoom("r", Mode.MEMBERS)
    view: RoomView = local.view
    client = Client()
    delivered: list[Msg] = []
    asked: set[str] = set()
    pos = [0] * len(streams)
    while any(p < len(st_) for p, st_ in zip(pos, streams, strict=True)):
        ready = [i for i, st_ in enumerate(streams) if pos[i] < len(st_)]
        pick = data.draw(st.sampled_from(ready + ([-1] if delivered else [])))
        if pick == -1:
            msg = data.draw(st.sampled_from(delivered), label="repeat")
        else:
            msg = streams[pick][pos[pick]]
            pos[pick] += 1
            delivered.append(msg)
        if view.apply(msg):
            asked.add(msg.gw)
        if data.draw(st.booleans(), label="window ends"):
            joins, leaves, _ = local.diff()
            client.apply(joins, leaves)
    for gw in sorted(asked):  # a holder asked answers with its whole state
        sender = next(s for s in senders if s.gw == gw)
        for msg in sender.state(parts=2):
            assert not view.apply(msg)
    joins, leaves, _ = local.diff()
    client.apply(joins, leaves)
    expected = truth(senders)
    assert view.members() == expected
    assert client.view == expected
    assert view.sockets == sum(len(s.facts) for s in senders)
    assert view.users == sum(1 for k in expected if k.startswith("u:"))


def test_a_users_second_holder_is_not_a_second_join_and_leave_waits_for_the_last() -> None:
    a, b = Sender("a"), Sender("b")
    local = LocalRoom("r", Mode.MEMBERS)
    for msg in a.state() + b.state() + a.set("u:1", {"n": 1}):
        local.view.apply(msg)
    assert local.diff()[:2] == ([{"user_id": "1", "info": {"n": 1}}], [])
    for msg in b.set("u:1", {"n": 1}) + a.remove("u:1"):
        local.view.apply(msg)
    assert local.diff()[:2] == ([], [])
    for msg in b.remove("u:1"):
        local.view.apply(msg)
    assert local.diff()[:2] == ([], [{"user_id": "1"}])


def test_a_join_and_leave_within_one_window_cancel_and_are_counted() -> None:
    a = Sender("a")
    local = LocalRoom("r", Mode.MEMBERS)
    for msg in [*a.state(), *a.set("u:1", None), *a.remove("u:1"), *a.set("u:2", None)]:
        local.view.apply(msg)
    joins, leaves, coalesced = local.diff()
    assert (joins, leaves, coalesced) == ([{"user_id": "2", "info": None}], [], 2)


def test_a_lost_message_asks_for_the_state_and_the_state_repairs_it() -> None:
    a = Sender("a")
    view = RoomView()
    assert not any(view.apply(m) for m in a.state())
    a.set("u:1", None)  # lost on the way
    assert view.apply(a.set("u:2", None)[0])  # the gap is seen
    for msg in a.state(parts=2):
        assert not view.apply(msg)
    assert view.members() == {"u:1": None, "u:2": None}


def test_a_lost_part_of_a_state_is_asked_again() -> None:
    a = Sender("a")
    for key in KEYS:
        a.set(key, None)
    view = RoomView()
    first, _lost, third = a.state(parts=3)
    assert not view.apply(first)
    assert view.apply(third)
    assert view.members() == {}  # nothing half-applied


def test_a_dead_holder_is_dropped_and_its_old_messages_stay_ignored() -> None:
    a, b = Sender("a"), Sender("b")
    view = RoomView()
    old = a.set("u:1", None)
    for msg in a.state() + old + b.state() + b.set("u:2", None):
        view.apply(msg)
    assert view.drop("a")
    assert view.members() == {"u:2": None}
    view.apply(old[0])  # a late repeat of the dead holder's message
    assert view.members() == {"u:2": None}
    # it comes back (a stall, not a crash): its next delta asks for its state
    assert view.apply(a.set("u:3", None)[0])
    for msg in a.state():
        view.apply(msg)
    assert view.members() == {"u:1": None, "u:2": None, "u:3": None}


def test_a_restarted_holder_replaces_its_old_self() -> None:
    view = RoomView()
    old = Sender("a", inc=1)
    for msg in old.state() + old.set("u:1", None) + old.set("u:2", None):
        view.apply(msg)
    new = Sender("a", inc=2)
    new.facts = {"u:3": None}
    for msg in new.state(hello=True):
        view.apply(msg)
    assert view.members() == {"u:3": None}


def test_info_is_the_smallest_holders() -> None:
    a, b = Sender("a"), Sender("b")
    view = RoomView()
    for msg in b.state() + b.set("u:1", {"tab": "b"}) + a.state() + a.set("u:1", {"tab": "a"}):
        view.apply(msg)
    assert view.info("u:1") == {"tab": "a"}
    for msg in a.remove("u:1"):
        view.apply(msg)
    assert view.info("u:1") == {"tab": "b"}
