"""Timed series of queries and the CPU they cost, net of what the servers burn idle.

Queries run one after another (a latency figure, not a throughput one). CPU is read
from the processes' CPU clocks (:mod:`bench.procstat`) before and after a series; the
servers' idle rate (10,000 connected sockets answer heartbeats) is measured once per
system and subtracted, so "CPU per query" is what the queries cost.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.presence.people import percentile
from bench.procstat import total_cpu_seconds


@dataclass(kw_only=True)
class Meter:
    """CPU clocks of one system: its servers, its broker, and the caller's own."""

    server_pids: Sequence[int]
    broker_pids: Sequence[int]
    caller_cpu_s: Callable[[], float] = time.process_time
    idle_server_cores: float = 0.0
    idle_broker_cores: float = 0.0

    def read(self) -> tuple[float, float, float, float]:
        return (
            total_cpu_seconds(self.server_pids),
            total_cpu_seconds(self.broker_pids),
            self.caller_cpu_s(),
            time.perf_counter(),
        )

    async def measure_idle(self, seconds: float) -> None:
        """The servers' and broker's CPU rate while nothing is asked of them."""
        s0, b0, _, t0 = self.read()
        await asyncio.sleep(seconds)
        s1, b1, _, t1 = self.read()
        self.idle_server_cores = max(0.0, (s1 - s0) / (t1 - t0))
        self.idle_broker_cores = max(0.0, (b1 - b0) / (t1 - t0))


@dataclass(kw_only=True)
class Series:
    """One kind of query on one room size."""

    system: str
    size: int
    ms: list[float] = field(default_factory=list)
    wrong: int = 0
    """Answers that were not the room's true membership (short, extra, wrong users)."""
    failed: int = 0
    """Queries that raised or timed out."""
    pages: int = 0
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    caller_cpu_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def charge(
        self, meter: Meter, before: tuple[float, float, float, float], *, caller_in_server: bool
    ) -> None:
        """Book the CPU since ``before``, net of the idle rates."""
        s1, b1, c1, t1 = meter.read()
        s0, b0, c0, t0 = before
        self.wall_s = t1 - t0
        self.server_cpu_s = max(0.0, s1 - s0 - meter.idle_server_cores * self.wall_s)
        self.broker_cpu_s = max(0.0, b1 - b0 - meter.idle_broker_cores * self.wall_s)
        self.caller_cpu_s = 0.0 if caller_in_server else c1 - c0

    def per_query_ms(self, cpu_s: float) -> float:
        n = len(self.ms)
        return cpu_s * 1000.0 / n if n else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "size": self.size,
            "n": len(self.ms),
            "p50_ms": percentile(self.ms, 0.50),
            "p99_ms": percentile(self.ms, 0.99),
            "max_ms": max(self.ms) if self.ms else math.nan,
            "wrong": self.wrong,
            "failed": self.failed,
            "pages_per_query": self.pages / len(self.ms) if self.ms else math.nan,
            "server_cpu_ms_per_query": self.per_query_ms(self.server_cpu_s),
            "broker_cpu_ms_per_query": self.per_query_ms(self.broker_cpu_s),
            "caller_cpu_ms_per_query": self.per_query_ms(self.caller_cpu_s),
            "wall_s": self.wall_s,
            "errors": self.errors[:5],
            "notes": self.notes,
        }
