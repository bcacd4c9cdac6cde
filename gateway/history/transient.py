"""Retrying what a JetStream leader election makes fail for a few seconds.

When a NATS node of a cluster is lost, the streams and buckets it led elect a new leader
(JetStream: a few seconds). Meanwhile their requests time out or answer "no response
from stream" / 503. A returning socket's recovery reads the session bucket and the
history stream exactly then (every socket of a lost gateway reconnects at once), so a
failed read is retried within a bounded budget instead of costing the socket its
session (measured: 30-45 % of reconnects after a node loss got fresh sessions without
it, bench/delivery). What is not transient, or outlasts the budget, is raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import nats.errors
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from shared.errors import GatewayTimeout, TransportError

T = TypeVar("T")

ELECTION_BUDGET_S: Final = 15.0
"""How long a recovery step keeps retrying: longer than one JetStream leader election.
nats-server's followers wait a random 4-9 s after the leader's last heartbeat (sent
every 1 s) before they campaign (0.1-0.8 s): up to ~11 s after the node is lost
(server/raft.go, minElectionTimeout..maxElectionTimeout), and the last retry may come
up to MAX_DELAY_S before the budget ends. At 6 s, a SIGKILLed leader still cost the
sockets returning right after it their sessions (tests/faults/test_recovery_cluster.py
measured 6-11 s). Meanwhile the CONNECT is being answered: the handshake timeout has
stopped, and socket.io-client waits for the answer."""
FIRST_DELAY_S: Final = 0.05
MAX_DELAY_S: Final = 1.0

TRANSIENT: Final = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    ServiceUnavailableError,
    NoStreamResponseError,
    TimeoutError,
    GatewayTimeout,
    TransportError,
)


async def retrying(
    op: Callable[[], Awaitable[T]],
    *,
    budget_s: float = ELECTION_BUDGET_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`await op()`, again after a transient failure (backing off from 50 ms to 1 s)
    while the budget lasts; the last failure is raised when it is spent."""
    deadline = clock() + budget_s
    delay = FIRST_DELAY_S
    while True:
        try:
            return await op()
        except TRANSIENT:
            if clock() + delay > deadline:
                raise
        await sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)


__all__ = ["ELECTION_BUDGET_S", "TRANSIENT", "retrying"]
