"""Room interest: subscribe on the first member, unsubscribe after the linger, never
leave a subscription behind that nobody wants, and keep nothing of a subscribe that
failed (a MemoryBroker and a manual clock: no I/O, no wall time)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.broker.memory import MemoryBroker
from gateway.interest import Interest
from shared.errors import TransportError
from tests.unit.fakes import ManualClock

LINGER_S = 1.0


class SlowBroker(MemoryBroker):
    """Subscriptions take until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def subscribe(self, subject: str) -> None:
        await self.release.wait()
        await super().subscribe(subject)


def interest(broker: MemoryBroker, members: set[str], clock: ManualClock) -> Interest:
    return Interest(broker, lambda key: f"room.{key}", lambda key: key in members, LINGER_S, clock)


async def run_pending() -> None:
    """Let the unsubscribe tasks the timers started run (no wall time passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_leave_while_the_subscribe_is_in_flight_unsubscribes_once_it_lands() -> None:
    broker, members, clock = SlowBroker(), {"lobby"}, ManualClock()
    rooms = interest(broker, members, clock)
    joining = asyncio.create_task(rooms.want("lobby"))
    await asyncio.sleep(0)
    members.discard("lobby")  # the only member left before NATS took the SUB
    rooms.unwant("lobby")
    clock.advance(LINGER_S * 3)  # the linger ends while the SUB is pending
    broker.release.set()
    await joining
    assert broker.subscriptions == {"room.lobby"}
    clock.advance(LINGER_S)  # the re-armed linger
    await run_pending()
    assert broker.subscriptions == frozenset()
    assert "lobby" not in rooms


async def test_a_quick_leave_and_join_keeps_one_subscription() -> None:
    broker, members, clock = MemoryBroker(), {"lobby"}, ManualClock()
    rooms = interest(broker, members, clock)
    await rooms.want("lobby")
    rooms.unwant("lobby")
    clock.advance(LINGER_S / 2)
    await rooms.want("lobby")  # back before the linger ended
    clock.advance(LINGER_S * 2)
    await run_pending()
    assert broker.subscriptions == {"room.lobby"}
    members.discard("lobby")
    rooms.unwant("lobby")
    clock.advance(LINGER_S - 0.01)
    await run_pending()
    assert broker.subscriptions == {"room.lobby"}  # still lingering
    clock.advance(0.01)
    await run_pending()
    assert broker.subscriptions == frozenset()
    assert rooms.count == 0


async def test_a_join_right_after_the_linger_ended_is_not_undone_by_its_unsubscribe() -> None:
    broker, members, clock = MemoryBroker(), {"lobby"}, ManualClock()
    rooms = interest(broker, members, clock)
    await rooms.want("lobby")
    members.discard("lobby")
    rooms.unwant("lobby")
    clock.advance(LINGER_S)  # the UNSUB task is started, not yet run
    members.add("lobby")
    await rooms.want("lobby")
    await run_pending()
    assert broker.subscriptions == {"room.lobby"}
    assert "lobby" in rooms


async def test_a_failed_subscribe_leaves_nothing_and_every_waiter_hears_it() -> None:
    broker, members, clock = SlowBroker(), {"lobby"}, ManualClock()
    broker.fail_subscribe = lambda subject: subject == "room.lobby"
    rooms = interest(broker, members, clock)
    first = asyncio.create_task(rooms.want("lobby"))
    second = asyncio.create_task(rooms.want("lobby"))
    await asyncio.sleep(0)
    broker.release.set()
    for waiter in (first, second):
        with pytest.raises(TransportError):
            await waiter
    assert "lobby" not in rooms
    assert broker.subscriptions == frozenset()
    broker.fail_subscribe = lambda subject: False
    await rooms.want("lobby")  # a later join subscribes afresh
    assert broker.subscriptions == {"room.lobby"}


class Directory:
    """What the room directory is told, in order, with what NATS had at that moment."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.told: list[tuple[str, str, bool]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def start(self, key: str) -> None:
        await self.release.wait()
        self.told.append(("start", key, f"room.{key}" in self.broker.subscriptions))

    async def end(self, key: str) -> None:
        self.told.append(("end", key, f"room.{key}" in self.broker.subscriptions))


def hooked(
    broker: MemoryBroker, members: set[str], clock: ManualClock
) -> tuple[Interest, Directory]:
    d = Directory(broker)
    rooms = Interest(
        broker,
        lambda key: f"room.{key}",
        lambda key: key in members,
        LINGER_S,
        clock,
        on_start=d.start,
        on_end=d.end,
    )
    return rooms, d


async def test_the_directory_hears_of_interest_after_the_sub_and_before_want_returns() -> None:
    broker, members, clock = MemoryBroker(), {"lobby"}, ManualClock()
    rooms, d = hooked(broker, members, clock)
    d.release.clear()
    joining = asyncio.create_task(rooms.want("lobby"))
    second = asyncio.create_task(rooms.want("lobby"))  # a concurrent join of the room
    await run_pending()
    assert not joining.done()
    assert not second.done()  # both wait for the entry, not only for the SUB
    d.release.set()
    await asyncio.gather(joining, second)
    assert d.told == [("start", "lobby", True)]
    members.clear()
    rooms.unwant("lobby")
    clock.advance(LINGER_S)
    await run_pending()
    assert d.told[-1] == ("end", "lobby", False)  # after the UNSUB


async def test_a_failed_subscribe_tells_the_directory_nothing() -> None:
    broker, members, clock = MemoryBroker(), {"lobby"}, ManualClock()
    broker.fail_subscribe = lambda subject: True
    rooms, d = hooked(broker, members, clock)
    with pytest.raises(TransportError):
        await rooms.want("lobby")
    assert d.told == []


async def test_a_join_right_after_the_linger_waits_for_the_end_before_the_start() -> None:
    broker, members, clock = MemoryBroker(), {"lobby"}, ManualClock()
    rooms, d = hooked(broker, members, clock)
    await rooms.want("lobby")
    members.clear()
    rooms.unwant("lobby")
    clock.advance(LINGER_S)  # the UNSUB and the directory's delete start
    members.add("lobby")
    await rooms.want("lobby")
    assert [what for what, _, _ in d.told] == ["start", "end", "start"]
    assert "lobby" in rooms
