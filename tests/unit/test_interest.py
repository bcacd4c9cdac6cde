"""Room interest: subscribe on the first member, unsubscribe after the linger, never
leave a subscription behind that nobody wants (a fake broker: no I/O here)."""

from __future__ import annotations

import asyncio

from gateway.broker import Handler
from gateway.interest import Interest

LINGER_S = 0.01


class SlowBroker:
    """Subscriptions take until `release` is set; counts what is subscribed."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.active: dict[int, str] = {}
        self._next = 0

    async def subscribe(self, subject: str, handler: Handler) -> int:
        await self.release.wait()
        self._next += 1
        self.active[self._next] = subject
        return self._next

    async def unsubscribe(self, sid: int) -> None:
        del self.active[sid]


def interest(broker: SlowBroker, members: set[str]) -> Interest:
    return Interest(
        broker,  # type: ignore[arg-type]
        lambda key: f"room.{key}",
        lambda key: lambda subject, reply, data: None,
        lambda key: key in members,
        LINGER_S,
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(LINGER_S * 2)


async def test_a_leave_while_the_subscribe_is_in_flight_unsubscribes_once_it_lands() -> None:
    broker, members = SlowBroker(), {"lobby"}
    rooms = interest(broker, members)
    joining = asyncio.create_task(rooms.want("lobby"))
    await asyncio.sleep(0)
    members.discard("lobby")  # the only member left before NATS took the SUB
    rooms.unwant("lobby")
    await asyncio.sleep(LINGER_S * 3)  # the linger ends while the SUB is pending
    broker.release.set()
    await joining
    await settle()
    assert broker.active == {}
    assert "lobby" not in rooms


async def test_a_quick_leave_and_join_keeps_one_subscription() -> None:
    broker, members = SlowBroker(), {"lobby"}
    broker.release.set()
    rooms = interest(broker, members)
    await rooms.want("lobby")
    rooms.unwant("lobby")
    await rooms.want("lobby")  # back before the linger ended
    await settle()
    assert list(broker.active.values()) == ["room.lobby"]
    members.discard("lobby")
    rooms.unwant("lobby")
    await settle()
    assert broker.active == {}
