"""gateway.eio4.PingSchedule: one deque and one timer serve every socket's next ping."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from gateway.eio4 import PingSchedule

INTERVAL_S = 0.2


class Sock:
    """Stands in for an Eio4Socket: what the schedule touches."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self._ping_at: float | None = None

    def ping_due(self) -> None:
        self.log.append(self.name)


def add(schedule: PingSchedule, sock: Sock) -> None:
    schedule.add(sock)  # type: ignore[arg-type]


async def test_sockets_are_pinged_in_order_after_the_interval() -> None:
    log: list[str] = []
    schedule = PingSchedule(INTERVAL_S)
    loop = asyncio.get_running_loop()
    started = loop.time()
    socks = [Sock(str(i), log) for i in range(3)]
    for s in socks:
        add(schedule, s)
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.01)
    assert log == []
    await asyncio.sleep(INTERVAL_S * 2)
    assert log == ["0", "1", "2"]
    assert loop.time() - started >= INTERVAL_S
    assert len(schedule) == 0
    assert all(s._ping_at is None for s in socks)


async def test_a_closed_or_rescheduled_socket_is_skipped_and_not_kept_alive() -> None:
    log: list[str] = []
    schedule = PingSchedule(INTERVAL_S)
    closed, gone, kept = Sock("closed", log), Sock("gone", log), Sock("kept", log)
    for s in (closed, gone, kept):
        add(schedule, s)
    closed._ping_at = None  # what Eio4Socket.close does
    del gone
    gc.collect()
    await asyncio.sleep(INTERVAL_S * 3)
    assert log == ["kept"]
    add(schedule, kept)  # rescheduled after its pong: one ping per interval
    await asyncio.sleep(INTERVAL_S * 3)
    assert log == ["kept", "kept"]


async def test_one_timer_at_a_time() -> None:
    schedule = PingSchedule(INTERVAL_S)
    log: list[str] = []
    handles: list[Any] = []
    loop = asyncio.get_running_loop()
    real_call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
        handle = real_call_at(when, callback, *args, **kwargs)
        if callback == schedule._fire:
            handles.append(handle)
        return handle

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        socks = [Sock(str(i), log) for i in range(100)]
        for s in socks:
            add(schedule, s)
        assert len(handles) == 1
        await asyncio.sleep(INTERVAL_S * 3)
    finally:
        loop.call_at = real_call_at  # type: ignore[method-assign]
    assert log == [str(i) for i in range(100)]
    assert len(handles) == 1  # all due together: no second timer
