"""Client events on the wire (shared/client_events.py) and the router's event
dispatch (publisher.router, no NATS)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from publisher.router import Router
from publisher.router.events import Event
from shared.client_events import (
    RESERVED_EVENTS,
    EventAnswer,
    SocketEvent,
    check_event_name,
    decode_event_answer,
    decode_socket_event,
    encode_event_answer,
    encode_socket_event,
)
from shared.errors import MalformedEnvelope, UsageError
from shared.subjects import Parsed, SubjectKind, Subjects
from shared.vrequest import Handshake

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.text(min_size=1, max_size=40).filter(lambda n: n not in RESERVED_EVENTS)


@given(names, st.lists(json_values, max_size=4), st.text(min_size=1, max_size=20), st.booleans())
def test_event_round_trip(name: str, args: list[Any], sid: str, ack: bool) -> None:
    hs = Handshake(headers={"cookie": "a=1"}, query={"x": "1"}, address="10.0.0.1", claims={"s": 1})
    ev = SocketEvent(name, tuple(args), sid, "gw1", hs, ack)
    assert decode_socket_event(encode_socket_event(ev)) == ev


@given(st.lists(json_values, max_size=4))
def test_answer_round_trip(args: list[Any]) -> None:
    answer = EventAnswer(args=tuple(args))
    assert decode_event_answer(encode_event_answer(answer)) == answer
    refused = EventAnswer(error="undeclared", message="no handler")
    assert decode_event_answer(encode_event_answer(refused)) == refused


@given(names)
def test_every_event_has_its_own_subject(name: str) -> None:
    s = Subjects("app")
    assert s.parse(s.client_event(name)) == Parsed(SubjectKind.CLIENT_EVENT, name)


@pytest.mark.parametrize("name", ["", "connect", "disconnect", "get", "post", "x" * 201, 3, None])
def test_reserved_and_bad_names_are_refused(name: Any) -> None:
    with pytest.raises(MalformedEnvelope):
        check_event_name(name)
    if isinstance(name, str):
        with pytest.raises(UsageError):
            Router().event(name)


async def test_router_answers_declared_events_and_refuses_others() -> None:
    router = Router()
    seen: list[Event] = []

    @router.event("typing")
    async def typing(ev: Event) -> dict[str, Any]:
        seen.append(ev)
        return {"ok": ev.data}

    @router.event("pair")
    def pair(ev: Event) -> tuple[int, int]:  # a plain handler, two ack arguments
        return 1, 2

    @router.event("boom")
    def boom(ev: Event) -> None:
        raise RuntimeError("boom")

    assert router.event_names == ("typing", "pair", "boom")
    with pytest.raises(UsageError):
        router.event("typing")(typing)
    pub: Any = object()
    ev = SocketEvent("typing", ({"x": 1},), "s1", "gw1", Handshake(), True)
    assert await router.handle_event(ev, pub) == EventAnswer(args=({"ok": {"x": 1}},))
    assert (seen[0].socket_id, seen[0].args, seen[0].pub) == ("s1", ({"x": 1},), pub)
    assert await router.handle_event(SocketEvent("pair", (), "s1", "gw1"), pub) == EventAnswer(
        args=(1, 2)
    )
    assert (await router.handle_event(SocketEvent("boom", (), "s1", "gw1"), pub)).error == "failed"
    assert (await router.handle_event(SocketEvent("other", (), "s1", "gw1"), pub)).error == (
        "undeclared"
    )
