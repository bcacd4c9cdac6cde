"""gateway.engine.heartbeat.PingSchedule: one deque and one timer serve every
connection's next ping. Driven by an injected clock: no wall time."""

from __future__ import annotations

import gc

from gateway.engine.heartbeat import PingSchedule
from tests.unit.fakes import ManualClock

INTERVAL_S = 0.2


class Sock:
    """Stands in for a connection: it keeps the time it was told and checks it."""

    def __init__(self, name: str, log: list[tuple[str, float]]) -> None:
        self.name, self.log = name, log
        self.ping_at: float | None = None

    def due(self, at: float) -> None:
        if self.ping_at == at:
            self.ping_at = None
            self.log.append((self.name, at))


def make(clock: ManualClock) -> PingSchedule[Sock]:
    return PingSchedule(INTERVAL_S, Sock.due, clock=clock)


def test_sockets_are_pinged_in_order_after_the_interval() -> None:
    clock, log = ManualClock(), list[tuple[str, float]]()
    schedule = make(clock)
    started = clock.now
    socks = [Sock(str(i), log) for i in range(3)]
    for s in socks:
        s.ping_at = schedule.add(s)
        clock.advance(0.005)
    clock.advance(0.01)
    assert log == []
    clock.advance(INTERVAL_S * 2)
    assert [name for name, _ in log] == ["0", "1", "2"]
    assert all(at - started >= INTERVAL_S for _, at in log)
    assert len(schedule) == 0
    assert all(s.ping_at is None for s in socks)


def test_a_closed_or_rescheduled_socket_is_skipped_and_not_kept_alive() -> None:
    clock, log = ManualClock(), list[tuple[str, float]]()
    schedule = make(clock)
    closed, gone, kept = Sock("closed", log), Sock("gone", log), Sock("kept", log)
    for s in (closed, gone, kept):
        s.ping_at = schedule.add(s)
    closed.ping_at = None  # what closing a connection does
    del gone
    gc.collect()
    clock.advance(INTERVAL_S * 3)
    assert [name for name, _ in log] == ["kept"]
    kept.ping_at = schedule.add(kept)  # rescheduled after its pong: one ping per interval
    clock.advance(INTERVAL_S * 3)
    assert [name for name, _ in log] == ["kept", "kept"]


def test_one_timer_at_a_time() -> None:
    clock, log = ManualClock(), list[tuple[str, float]]()
    schedule = make(clock)
    socks = [Sock(str(i), log) for i in range(100)]
    for s in socks:
        s.ping_at = schedule.add(s)
    assert clock.pending == 1
    clock.advance(INTERVAL_S * 3)
    assert [name for name, _ in log] == [str(i) for i in range(100)]
    assert clock.pending == 0  # all due together: no second timer


def test_entries_added_later_get_the_next_timer() -> None:
    clock, log = ManualClock(), list[tuple[str, float]]()
    schedule = make(clock)
    a, b = Sock("a", log), Sock("b", log)
    a.ping_at = schedule.add(a)
    clock.advance(INTERVAL_S / 2)
    b.ping_at = schedule.add(b)
    clock.advance(INTERVAL_S / 2 + 0.001)
    assert [name for name, _ in log] == ["a"]
    assert clock.pending == 1  # b's
    clock.advance(INTERVAL_S / 2)
    assert [name for name, _ in log] == ["a", "b"]
    schedule.close()
    assert len(schedule) == 0
