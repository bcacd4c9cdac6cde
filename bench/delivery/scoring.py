"""Scoring what each client received: delivered %, duplicates, out-of-order, catch-up.

Pure functions over plain data (no I/O), so the figures the benchmark prints are
unit-tested (tests/unit/test_delivery_scoring.py). A client is expected to receive
every message published to its room while the run lasted (all clients joined before
the first one), except publishes that failed at the publisher.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class SequenceScore:
    """One client's received numbers against the numbers it should have received."""

    expected: int
    delivered: int
    """Distinct expected numbers received at least once."""
    duplicates: int
    """Receptions of a number already received (each extra copy counts once)."""
    out_of_order: int
    """First receptions of a number lower than one received before it."""
    unexpected: int = 0
    """Distinct numbers received that were not expected (e.g. a failed publish stored anyway)."""

    @property
    def missing(self) -> int:
        return self.expected - self.delivered


def score_sequence(received: Sequence[int], expected: Collection[int]) -> SequenceScore:
    """Score numbers in arrival order against the expected set."""
    seen: set[int] = set()
    duplicates = out_of_order = 0
    highest = -math.inf
    for n in received:
        if n in seen:
            duplicates += 1
            continue
        seen.add(n)
        if n < highest:
            out_of_order += 1
        else:
            highest = n
    expected_set = expected if isinstance(expected, set | frozenset) else set(expected)
    delivered = len(seen & expected_set)
    return SequenceScore(
        expected=len(expected_set),
        delivered=delivered,
        duplicates=duplicates,
        out_of_order=out_of_order,
        unexpected=len(seen) - delivered,
    )


@dataclass(frozen=True, kw_only=True)
class CatchUp:
    """What one reconnect had missed, and when the last of it arrived."""

    missed: int
    """Expected numbers published while away: above the highest held, sent before."""
    ms: float | None
    """Reconnect to the first reception of the last missed one (0 if none was
    missed); None when one of them never arrived."""


def catch_up(
    away_ms: float,
    connect_ms: float,
    received: Sequence[int],
    received_at_ms: Sequence[float],
    sent_at_ms: Sequence[float],
    expected: Collection[int],
) -> CatchUp:
    """Time from a reconnect to holding what the client missed while it was away.

    ``sent_at_ms[n - 1]`` is when number ``n`` was published (ascending). What it
    missed: the expected numbers above the highest it had received before it went away
    (``away_ms``, the disconnect) and published before it was back (``connect_ms``). A
    number lost earlier counts against delivery, not against every later catch-up. A
    replay may reach the client just before its connect event (socket.io's CSR sends
    the missed packets ahead of the CONNECT reply), hence the floor at 0.
    """
    due = bisect.bisect_left(sent_at_ms, connect_ms)
    first_at: dict[int, float] = {}
    held = 0
    for n, t in zip(received, received_at_ms, strict=True):
        first_at.setdefault(n, t)
        if t < away_ms:
            held = max(held, n)
    latest = connect_ms
    missed = 0
    never = False
    for n in range(held + 1, due + 1):
        if n not in expected:
            continue
        missed += 1
        got = first_at.get(n)
        if got is None:
            never = True
        else:
            latest = max(latest, got)
    return CatchUp(missed=missed, ms=None if never else latest - connect_ms)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, kw_only=True)
class ClientRecord:
    """What one client reported (bench/delivery/clients.js ``report``)."""

    kind: str
    room: str
    received: Sequence[int]
    received_at_ms: Sequence[float]
    connects: Sequence[tuple[float, bool]]
    """(time, resumed) of every connect; the first is the initial one."""
    disconnects: Sequence[float] = ()
    """When each connection was lost (ascending)."""
    foreign: int = 0
    """Messages of another room (a routing error; must be 0)."""

    @classmethod
    def from_report(cls, raw: Mapping[str, object]) -> ClientRecord:
        recv = list(raw["recv"])  # type: ignore[call-overload]
        connects = [(float(c[0]), bool(c[1])) for c in raw["connects"]]  # type: ignore[attr-defined]
        return cls(
            kind=str(raw["kind"]),
            room=str(raw["room"]),
            received=[int(n) for n in recv[0::2]],
            received_at_ms=[float(t) for t in recv[1::2]],
            connects=connects,
            disconnects=sorted(float(d[0]) for d in raw.get("disconnects", ())),  # type: ignore[attr-defined]
            foreign=int(raw.get("foreign", 0)),  # type: ignore[call-overload]
        )


@dataclass(frozen=True, kw_only=True)
class RunScore:
    """A variant's figures over a set of clients."""

    clients: int = 0
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    foreign: int = 0
    reconnects: int = 0
    resumed: int = 0
    caught_up: int = 0
    """Reconnects after which everything missed while away arrived (or nothing was)."""
    missed_while_away: int = 0
    """Reconnects that had missed at least one message while away."""
    catch_up_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def delivered_pct(self) -> float | None:
        return 100.0 * self.delivered / self.expected if self.expected else None

    @property
    def lost(self) -> int:
        return self.expected - self.delivered

    def summary(self) -> dict[str, float | int | None]:
        return {
            "clients": self.clients,
            "expected": self.expected,
            "delivered": self.delivered,
            "delivered_pct": self.delivered_pct,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "unexpected": self.unexpected,
            "foreign": self.foreign,
            "reconnects": self.reconnects,
            "resumed": self.resumed,
            "caught_up": self.caught_up,
            "missed_while_away": self.missed_while_away,
            "caught_up_after_miss": len(self.catch_up_ms),
            "catch_up_p50_ms": percentile(self.catch_up_ms, 50),
            "catch_up_p99_ms": percentile(self.catch_up_ms, 99),
        }


def expected_numbers(sent: int, failed: Collection[int] = ()) -> frozenset[int]:
    """Numbers 1..sent, less the publishes that failed."""
    return frozenset(range(1, sent + 1)) - frozenset(failed)


def score_run(
    clients: Iterable[ClientRecord],
    sent_at_ms: Mapping[str, Sequence[float]],
    failed: Mapping[str, Collection[int]] | None = None,
) -> RunScore:
    """Sum the clients' scores; every connect after a client's first is a reconnect."""
    failed = failed or {}
    expected_of = {
        room: expected_numbers(len(times), failed.get(room, ()))
        for room, times in sent_at_ms.items()
    }
    totals = dict.fromkeys(
        (
            "clients",
            "expected",
            "delivered",
            "duplicates",
            "out_of_order",
            "unexpected",
            "foreign",
            "reconnects",
            "resumed",
            "caught_up",
            "missed_while_away",
        ),
        0,
    )
    catch_ups: list[float] = []
    for c in clients:
        expected = expected_of.get(c.room, frozenset())
        s = score_sequence(c.received, expected)
        totals["clients"] += 1
        totals["expected"] += s.expected
        totals["delivered"] += s.delivered
        totals["duplicates"] += s.duplicates
        totals["out_of_order"] += s.out_of_order
        totals["unexpected"] += s.unexpected
        totals["foreign"] += c.foreign
        for connect_ms, resumed in c.connects[1:]:
            totals["reconnects"] += 1
            totals["resumed"] += int(resumed)
            i = bisect.bisect_left(c.disconnects, connect_ms)
            away_ms = c.disconnects[i - 1] if i else connect_ms
            got = catch_up(
                away_ms,
                connect_ms,
                c.received,
                c.received_at_ms,
                sent_at_ms.get(c.room, ()),
                expected,
            )
            if got.missed:
                totals["missed_while_away"] += 1
            if got.ms is not None:
                totals["caught_up"] += 1
                if got.missed:  # timed only where there was something to catch up
                    catch_ups.append(got.ms)
    return RunScore(**totals, catch_up_ms=catch_ups)
