"""gateway/history/transient.py: bounded retries over a JetStream leader election."""

from __future__ import annotations

import pytest
from nats.js.errors import ServiceUnavailableError

from gateway.history.transient import ELECTION_BUDGET_S, retrying
from shared.errors import UsageError


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


async def test_a_transient_failure_is_retried_until_it_passes() -> None:
    clock = _Clock()
    calls = 0

    async def op() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ServiceUnavailableError()
        return "ok"

    assert await retrying(op, budget_s=6.0, clock=clock, sleep=clock.sleep) == "ok"
    assert calls == 4
    assert clock.slept == [0.05, 0.1, 0.2]


RAFT_WORST_ELECTION_S = 1.0 + 9.0 + 0.8
"""nats-server: a heartbeat interval, the longest election timeout, the longest campaign."""


async def test_the_default_budget_outlasts_a_whole_jetstream_election() -> None:
    """A leader lost just after its heartbeat: the stream answers 503 until a follower's
    election timer (up to 9 s) fires and it wins its campaign."""
    clock = _Clock()

    async def op() -> str:
        if clock.now < RAFT_WORST_ELECTION_S:
            raise ServiceUnavailableError()
        return "ok"

    assert await retrying(op, clock=clock, sleep=clock.sleep) == "ok"
    assert ELECTION_BUDGET_S > RAFT_WORST_ELECTION_S


async def test_the_budget_bounds_the_wait_and_the_last_failure_is_raised() -> None:
    clock = _Clock()

    async def op() -> None:
        raise TimeoutError("leader election")

    with pytest.raises(TimeoutError):
        await retrying(op, budget_s=3.0, clock=clock, sleep=clock.sleep)
    assert sum(clock.slept) <= 3.0
    assert clock.slept[-1] <= 1.0


async def test_what_is_not_transient_is_raised_at_once() -> None:
    clock = _Clock()

    async def op() -> None:
        raise UsageError("a bug, not an election")

    with pytest.raises(UsageError):
        await retrying(op, clock=clock, sleep=clock.sleep)
    assert clock.slept == []
