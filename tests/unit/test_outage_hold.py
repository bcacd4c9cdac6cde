"""publisher.hold: what a publisher holds through a NATS outage, and when it lets go
(issue 16 #1). Pure logic on a real event loop, on a manual clock: a timed wait returns
at once having moved the clock by its timeout, unless news came; the end-to-end case is
tests/faults/test_publisher_outage_hold.py."""

from __future__ import annotations

import asyncio

import pytest

from publisher.hold import OutageHold
from shared.envelope import KIND_BROADCAST, encode_args, encode_data
from shared.errors import FailedPublish, GatewayTimeout, TransportError
from shared.subjects import Subjects

SUBJECT = Subjects("p").room("room")


class Clock:
    """Manual time for the hold: `wait` yields to the loop once, then, if nothing was
    heard meanwhile, lets the whole timeout pass at once."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        if not event.is_set():
            self.now += timeout


def _hold(
    timeout_s: float = 1.0, max_bytes: int = 10_000
) -> tuple[OutageHold, list[FailedPublish]]:
    reported: list[FailedPublish] = []
    clock = Clock()
    hold = OutageHold(
        timeout_s=timeout_s,
        max_bytes=max_bytes,
        report=reported.append,
        clock=clock,
        wait=clock.wait,
    )
    return hold, reported


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Wire:
    """Where released messages go; `up` says whether the connection is."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.pings = 0
        self.up = True

    async def publish(self, subject: str, body: bytes, kind: str) -> None:
        if not self.up:
            raise TransportError("down")
        self.sent.append(body)

    async def ping(self) -> None:
        self.pings += 1


def _body(i: int) -> bytes:
    return encode_data(KIND_BROADCAST, encode_args(f"m{i}", i), ts=0.0, rooms=["room"])


async def test_held_until_every_known_gateway_is_back_then_sent_in_order() -> None:
    hold, reported = _hold()
    hold.heard("gw1")
    hold.heard("gw2")
    hold.start()
    for i in range(5):
        hold.put(SUBJECT, _body(i), "broadcast")
    wire = Wire()
    release = asyncio.ensure_future(hold.release(wire.publish, wire.ping, lambda: wire.up))
    await asyncio.sleep(0)  # the release is waiting
    hold.heard("gw1")
    await asyncio.sleep(0)
    assert wire.sent == []  # gw2 not back yet
    assert hold.active
    hold.heard("gw2")
    await release
    assert wire.sent == [_body(i) for i in range(5)]
    assert not hold.active
    assert reported == []
    assert wire.pings >= 1


async def test_the_bound_in_bytes_refuses_at_the_call() -> None:
    hold, _ = _hold(max_bytes=2 * len(_body(0)))
    hold.start()
    hold.put(SUBJECT, _body(0), "broadcast")
    hold.put(SUBJECT, _body(1), "broadcast")
    with pytest.raises(TransportError, match="holds"):
        hold.put(SUBJECT, _body(2), "broadcast")
    assert hold.held == 2


async def test_past_the_timeout_held_messages_are_sent_and_each_reported() -> None:
    hold, reported = _hold(timeout_s=5.0)
    hold.heard("gw1")
    hold.start()
    for i in range(3):
        hold.put(SUBJECT, _body(i), "broadcast")
    wire = Wire()
    await hold.release(wire.publish, wire.ping, lambda: wire.up)
    assert wire.sent == [_body(i) for i in range(3)]
    assert [f.event for f in reported] == ["m0", "m1", "m2"]
    assert all(isinstance(f.error, GatewayTimeout) and "gw1" in str(f.error) for f in reported)
    assert all(f.room == "room" for f in reported)


async def test_a_gateway_that_said_down_is_not_waited_for() -> None:
    hold, reported = _hold(timeout_s=5.0)
    hold.heard("gw1")
    hold.start()
    hold.put(SUBJECT, _body(0), "broadcast")
    hold.heard("gw1", down=True)
    wire = Wire()
    await hold.release(wire.publish, wire.ping, lambda: wire.up)
    assert wire.sent == [_body(0)]
    assert reported == []


async def test_lost_again_while_releasing_keeps_the_rest_held() -> None:
    hold, reported = _hold()
    hold.start()  # no gateway known: nothing to wait for
    hold.put(SUBJECT, _body(0), "broadcast")
    wire = Wire()
    wire.up = False
    await hold.release(wire.publish, wire.ping, lambda: True)
    assert hold.active
    assert hold.held == 1
    wire.up = True
    await hold.release(wire.publish, wire.ping, lambda: True)
    assert wire.sent == [_body(0)]
    assert not hold.active
    assert reported == []


async def test_give_up_reports_everything_held() -> None:
    hold, reported = _hold()
    hold.start()
    hold.put(SUBJECT, _body(0), "broadcast")
    hold.give_up("closed")
    assert [f.event for f in reported] == ["m0"]
    assert not hold.active
    assert await hold.wait_released(0.01)
