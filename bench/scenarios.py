"""Scenarios S1-S4 and the measuring they share.

Every measured step follows the same recipe: snapshot CPU of every process involved,
publish at a paced rate, wait for the deliveries to drain, snapshot again, and merge
the load generators' latency histograms. A step only counts when the harness did not
bound it: no load-generator process saturated, and not a saturated machine of which
the load generators took a large share — either way it would measure the harness.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from bench import hist
from bench.procstat import cpu_seconds, machine_busy_seconds, rss_bytes
from bench.rpc import Worker
from bench.systems.base import Deployment

S1_ROOM: str = "all"
S1_PROBE: int = -1
S2_PROBE: int = -2


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """Scenario sizes and timings; FULL takes ~2 minutes per system on 2 cores."""

    clients: int = 2000
    """S1: all in one room. S2: the same clients, two per room (clients // 2 rooms)."""
    s2_room_size: int = 2
    s3_conns: int = 5000
    server_procs: int = 2
    loadgen_procs: int = 2
    loadgen_impl: str = "raw"
    """Client transport, see :mod:`bench.loadgen`: "raw" or "aiohttp"."""
    step_s: float = 2.0
    max_steps: int = 6
    search_budget_s: float = 22.0
    drain_s: float = 2.0
    settle_s: float = 10.0
    p99_limit_ms: float = 200.0
    min_achieved: float = 0.95
    """A step whose publisher reached less than this share of its target rate fails."""
    lg_saturation: float = 0.90
    """Load-generator CPU (cores) per process above which a step is invalid."""
    machine_saturation: float = 0.90
    """Machine CPU use by the benchmark (1.0 = every core busy; foreign load, which has
    its own re-run rule, left out) above which a step is marked `machine_saturated`:
    near 2 busy cores the servers wait for CPU, their loop ticks grow and carry more
    frames each, so they batch more than they would on a machine of their own (issue
    17). Such a step still counts, but a maximum measured there is a lower bound and
    its efficiency is flattered; it is printed with a note."""
    lg_near_saturation: float = 0.75
    """One load-generator process above this share of a core also marks a step
    `machine_saturated` (clients falling behind delay what the servers see)."""
    foreign_limit: float = 0.15
    """Foreign CPU share of the machine above which a step is re-run after a quiet spell."""
    foreign_retries: int = 1
    quiet_wait_s: float = 10.0
    quiet_budget_s: float = 40.0
    """Most time one run spends waiting for a quiet machine, all waits together."""
    search_start_cores: float = 1.0
    """The rate search starts at the rate one server core would sustain, as estimated
    from the latency step's deliveries per server CPU-second."""
    latency_s: float = 5.0
    s1_latency_rate: float = 2.0
    s2_latency_rate: float = 500.0
    """msg/s for the fixed-rate latency figures (S2: 1,000 deliveries/s, each room every 2 s)."""
    s1_fixed_rates: tuple[float, ...] = (2.0, 10.0, 20.0)
    """msg/s of the equal-load efficiency steps (issue 17's headline), below saturation
    of the fast systems on 2 cores: 4,000, 20,000 (mid) and 40,000 deliveries/s.
    The latency rate is always one of them."""
    s2_fixed_rates: tuple[float, ...] = (500.0, 2500.0, 5000.0)
    """1,000, 5,000 (mid) and 10,000 deliveries/s."""
    fixed_s: float = 3.0
    """Length of each fixed-rate step other than the latency step (which is `latency_s`)."""
    warmup_s: float = 3.0
    """An unrecorded step at the lowest fixed rate before the recorded ones. Without it
    the first step measured a system's start, not its steady state: Sailcast's first
    step on a fresh broker gave p99 77–81 ms at 2 msg/s in three runs where later
    steps at higher rates gave 24–43 ms (issue 17)."""
    s1_start_rate: float = 8.0
    s2_start_rate: float = 1000.0
    """msg/s where the rate search starts if the latency step gave no estimate."""
    s4_seconds: float = 3.0
    s4_max_publishes: int = 300_000
    barrier_timeout_s: float = 30.0
    s3_settle_s: float = 2.0
    """Pause before each S3 RSS reading, for the servers' allocations to settle."""


FULL = Sizes()
QUICK = Sizes(
    clients=100,
    s3_conns=200,
    step_s=1.0,
    max_steps=2,
    search_budget_s=6.0,
    drain_s=1.0,
    settle_s=2.0,
    latency_s=1.0,
    s2_latency_rate=50.0,
    s1_fixed_rates=(2.0, 10.0),
    s2_fixed_rates=(50.0, 200.0),
    fixed_s=1.0,
    warmup_s=0.5,
    s1_start_rate=20.0,
    s2_start_rate=200.0,
    s4_seconds=0.5,
    s4_max_publishes=20_000,
    barrier_timeout_s=15.0,
    foreign_retries=0,
    quiet_wait_s=1.0,
    quiet_budget_s=3.0,
    s3_settle_s=0.5,
)


class Quiet:
    """Waits for a quiet machine, from a time budget shared by the whole run.

    On a shared machine (CI, other developers' tests) a step disturbed by foreign load
    is re-run once the machine is idle again; the budget keeps a machine that never
    goes quiet from stretching the run past its time limit.
    """

    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.remaining_s = sizes.quiet_budget_s

    async def wait(self) -> float:
        """Wait until the machine is nearly idle (while we send nothing); return its busy share."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + min(self.sizes.quiet_wait_s, self.remaining_s)
        share = math.nan
        while True:
            b0, t0, _ = machine_busy_seconds()
            await asyncio.sleep(0.5)
            b1, t1, _ = machine_busy_seconds()
            share = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
            if share <= self.sizes.foreign_limit or loop.time() >= deadline:
                break
        self.remaining_s = max(0.0, self.remaining_s - (loop.time() - started))
        return share


class ScenarioError(RuntimeError):
    """A scenario could not be set up (connections failed, joins never took effect)."""


@dataclass
class Step:
    """One paced publishing step and everything measured over it."""

    k: int
    rate: float
    """Target messages/s."""
    room_size: int
    sent: int = 0
    achieved_rate: float = 0.0
    expected: int = 0
    delivered: int = 0
    publish_s: float = 0.0
    window_s: float = 0.0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    server_cpu_s: float = 0.0
    publisher_cpu_s: float = 0.0
    broker_cpu_s: dict[str, float] = field(default_factory=dict)
    loadgen_cpu_s: list[float] = field(default_factory=list)
    loadgen_max_core: float = 0.0
    """Highest CPU share of one core used by one load-generator process."""
    loadgen_share: float = 0.0
    """Load generators' part of all CPU the machine spent in the window."""
    machine_busy: float = 0.0
    """Machine CPU use in the window, 1.0 = all cores busy."""
    interrupt_share: float = 0.0
    """Share of the machine's CPU in irq/softirq (mostly our loopback TCP)."""
    foreign_share: float = 0.0
    """Share of the machine's CPU used by processes outside this benchmark (noise)."""
    retries: int = 0
    """Times this step was re-run because foreign load disturbed it."""
    disconnected: int = 0
    loadgen_saturated: bool = False
    """One load-generator process used more than ``lg_saturation`` of a core."""
    machine_saturated: bool = False
    """The machine was near 2 busy cores or a load generator near one
    (``machine_saturation``, ``lg_near_saturation``): a note, not a failure."""
    passed: bool = False
    why: str = ""

    @property
    def harness_bound(self) -> bool:
        """A load generator could not keep up: the step measured the harness, never a
        pass. (A saturated machine alone is only noted, see `machine_saturated`.)"""
        return self.loadgen_saturated

    @property
    def deliveries_per_s(self) -> float:
        return self.delivered / self.publish_s if self.publish_s else 0.0

    @property
    def deliveries_per_server_cpu_s(self) -> float:
        return self.delivered / self.server_cpu_s if self.server_cpu_s else math.nan

    @property
    def saturation(self) -> str:
        """What the `machine_saturated` note says about the step."""
        text = (
            f"machine {self.machine_busy:.0%} busy, load generators {self.loadgen_share:.0%} "
            f"of it, busiest load generator {self.loadgen_max_core:.0%} of a core"
        )
        if self.foreign_share >= 0.05:
            text += f", foreign {self.foreign_share:.0%}"
        return text

    def fixed_rate_dict(self) -> dict[str, Any]:
        """The equal-load figures of a fixed-rate step (one entry of ``fixed_rates``)."""
        return {
            "rate_msgs_per_s": self.rate,
            "deliveries_per_s": self.deliveries_per_s,
            "deliveries_per_server_cpu_s": self.deliveries_per_server_cpu_s,
            "server_cpu_s": self.server_cpu_s,
            "passed": self.passed,
            "why": self.why,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "loadgen_share": self.loadgen_share,
            "loadgen_max_core": self.loadgen_max_core,
            "machine_busy": self.machine_busy,
            "machine_saturated": self.machine_saturated,
            "saturation": self.saturation,
            "foreign_share": self.foreign_share,
        }

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["deliveries_per_s"] = self.deliveries_per_s
        d["deliveries_per_server_cpu_s"] = self.deliveries_per_server_cpu_s
        d["harness_bound"] = self.harness_bound
        return d


@dataclass(frozen=True)
class _Snap:
    wall: float
    server: float
    publisher: float
    brokers: dict[str, float]
    loadgens: list[float]
    machine: tuple[float, float, float]


class Bench:
    """One started system with its load generators and publisher process."""

    def __init__(
        self,
        *,
        deployment: Deployment,
        loadgens: Sequence[Worker],
        publisher: Worker,
        broker_pids: dict[str, int],
        sizes: Sizes,
        quiet: Quiet,
        log: TextIO,
    ) -> None:
        self.quiet = quiet
        self.dep = deployment
        self.loadgens = list(loadgens)
        self.publisher = publisher
        self.broker_pids = broker_pids
        self.sizes = sizes
        self.log = log
        self._next_k = 0

    def new_k(self) -> int:
        self._next_k += 1
        return self._next_k

    def note(self, text: str) -> None:
        self.log.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
        self.log.flush()

    async def _each(self, op: str, **args: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(lg.call(op, **args) for lg in self.loadgens)))

    async def _snap(self) -> _Snap:
        lgs = await self._each("ping")
        return _Snap(
            wall=time.perf_counter(),
            server=sum(cpu_seconds(p) for p in self.dep.pids),
            publisher=cpu_seconds(self.publisher.pid),
            brokers={name: cpu_seconds(pid) for name, pid in self.broker_pids.items()},
            loadgens=[r["cpu_s"] for r in lgs],
            machine=machine_busy_seconds(),
        )

    # -- connections and membership ------------------------------------------------

    async def connect(self, n: int) -> list[str]:
        """Open ``n`` clients spread over load generators and servers; return sids."""
        p = len(self.loadgens)
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(
                lg.call(
                    "connect",
                    timeout_s=300,
                    urls=list(self.dep.urls),
                    indices=list(range(j, n, p)),
                    impl=self.sizes.loadgen_impl,
                )
                for j, lg in enumerate(self.loadgens)
            )
        )
        failed = sum(r["failed"] for r in replies)
        if failed:
            errors = [e for r in replies for e in r["errors"]]
            raise ScenarioError(f"{failed} of {n} connections failed, e.g. {errors[:3]}")
        sids: dict[int, str] = {}
        for r in replies:
            sids.update({int(i): s for i, s in r["sids"].items()})
        self.note(f"connected {n} clients in {time.perf_counter() - started:.1f} s")
        return [sids[i] for i in range(n)]

    async def close_clients(self) -> None:
        await self._each("close_all")

    async def join(self, pairs: list[tuple[str, str]]) -> None:
        reply = await self.publisher.call("join", timeout_s=300, pairs=pairs)
        self.note(f"{len(pairs)} joins published in {reply['seconds']:.1f} s")

    async def barrier(self, k: int, rooms: list[str], clients: int) -> None:
        """Probe ``rooms`` until every client got a probe: proof the joins took effect.

        Works the same for every system, whatever its join path (control subject,
        Redis manager message, our publisher's request), without peeking inside it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.sizes.barrier_timeout_s
        got = 0
        while loop.time() < deadline:
            await self.publisher.call("probe", rooms=rooms, k=k)
            for _ in range(10):
                await asyncio.sleep(0.1)
                got = sum(r["n"] for r in await self._each("probed", k=k))
                if got >= clients:
                    return
        raise ScenarioError(f"only {got} of {clients} clients got probe {k}: joins lost?")

    # -- paced steps ---------------------------------------------------------------

    async def step(
        self,
        rooms: list[str],
        room_size: int,
        rate: float,
        duration_s: float,
        *,
        retry_passed: bool = False,
    ) -> Step:
        """One measured step; re-run (up to ``foreign_retries``) if other load disturbed it.

        The machine may be shared (CI, other developers' tests): CPU spent by
        processes outside the benchmark shows as ``foreign_share``. A failed step
        with too much of it is measured again once the machine is quiet (a pass
        despite the noise stands, unless ``retry_passed``: latency figures).
        """
        retries = 0
        while True:
            s = await self._step_once(rooms, room_size, rate, duration_s)
            s.retries = retries
            disturbed = s.foreign_share > self.sizes.foreign_limit
            if (
                not disturbed
                or (s.passed and not retry_passed)
                or retries >= self.sizes.foreign_retries
            ):
                return s
            retries += 1
            if not s.passed:
                await self.settle(s.k)
            await self.wait_quiet()

    async def wait_quiet(self) -> float:
        share = await self.quiet.wait()
        self.note(f"machine busy {share:.0%} after waiting for quiet")
        return share

    async def _step_once(
        self, rooms: list[str], room_size: int, rate: float, duration_s: float
    ) -> Step:
        s = Step(k=self.new_k(), rate=rate, room_size=room_size)
        before = await self._snap()
        pub = await self.publisher.call(
            "run",
            timeout_s=duration_s * 5 + 60,
            k=s.k,
            rooms=rooms,
            rate=rate,
            duration_s=duration_s,
        )
        s.sent, s.publish_s, s.achieved_rate = pub["sent"], pub["elapsed_s"], pub["achieved_rate"]
        s.expected = s.sent * room_size
        await self._drain(s.k, s.expected)
        after = await self._snap()
        replies = await self._each("collect", k=s.k)
        merged = hist.merge(r["hist"] for r in replies)
        s.delivered = sum(r["n"] for r in replies)
        s.disconnected = sum(r["disconnected"] for r in replies)
        missing = max(s.expected - s.delivered, 0)
        s.p50_ms = hist.quantile_ms(merged, 0.50, missing=missing)
        s.p90_ms = hist.quantile_ms(merged, 0.90, missing=missing)
        s.p99_ms = hist.quantile_ms(merged, 0.99, missing=missing)
        s.max_ms = hist.quantile_ms(merged, 1.0, missing=missing)
        self._account(s, before, after)
        self._judge(s)
        self.note(
            f"step k={s.k} rate={rate:g}/s sent={s.sent} delivered={s.delivered}/{s.expected} "
            f"{s.deliveries_per_s:,.0f} dlv/s p50={s.p50_ms:.1f} p99={s.p99_ms:.1f} ms "
            f"srv={s.server_cpu_s:.2f}s lgmax={s.loadgen_max_core:.2f} busy={s.machine_busy:.2f} "
            f"foreign={s.foreign_share:.2f} "
            f"{'PASS' if s.passed else 'FAIL ' + s.why}"
        )
        return s

    async def _drain(self, k: int, expected: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.sizes.drain_s
        last, last_change = -1, loop.time()
        while loop.time() < deadline:
            got = sum(r["n"] for r in await self._each("count", k=k))
            if got >= expected:
                return
            if got != last:
                last, last_change = got, loop.time()
            elif loop.time() - last_change > 0.5:
                return
            await asyncio.sleep(0.05)

    async def settle(self, k: int) -> None:
        """After an overloaded step, wait for its backlog so the next step starts clean."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.sizes.settle_s
        last = -1
        while loop.time() < deadline:
            got = sum(r["n"] for r in await self._each("count", k=k))
            if got == last:
                break
            last = got
            await asyncio.sleep(0.5)
        await self._each("collect", k=k)  # drop the late samples

    def _account(self, s: Step, a: _Snap, b: _Snap) -> None:
        s.window_s = b.wall - a.wall
        s.server_cpu_s = b.server - a.server
        s.publisher_cpu_s = b.publisher - a.publisher
        s.broker_cpu_s = {n: b.brokers[n] - a.brokers[n] for n in b.brokers}
        s.loadgen_cpu_s = [y - x for x, y in zip(a.loadgens, b.loadgens, strict=True)]
        s.loadgen_max_core = max(s.loadgen_cpu_s) / s.window_s if s.window_s else 0.0
        busy = b.machine[0] - a.machine[0]
        total = b.machine[1] - a.machine[1]
        s.machine_busy = busy / total if total else 0.0
        s.loadgen_share = sum(s.loadgen_cpu_s) / busy if busy else 0.0
        ours = (
            s.server_cpu_s + s.publisher_cpu_s + sum(s.broker_cpu_s.values()) + sum(s.loadgen_cpu_s)
        )
        interrupt = b.machine[2] - a.machine[2]
        s.interrupt_share = interrupt / total if total else 0.0
        s.foreign_share = max(busy - interrupt - ours, 0.0) / total if total else 0.0

    def _judge(self, s: Step) -> None:
        reasons = []
        s.loadgen_saturated = s.loadgen_max_core > self.sizes.lg_saturation
        if s.loadgen_saturated:
            reasons.append(f"loadgen saturated ({s.loadgen_max_core:.0%} of a core)")
        s.machine_saturated = (
            s.machine_busy - s.foreign_share > self.sizes.machine_saturation
            or s.loadgen_max_core > self.sizes.lg_near_saturation
        )
        if s.disconnected:
            reasons.append(f"{s.disconnected} clients disconnected")
        if s.achieved_rate < self.sizes.min_achieved * s.rate:
            reasons.append(f"publisher reached {s.achieved_rate:.0f}/{s.rate:g} msg/s")
        if not s.p99_ms <= self.sizes.p99_limit_ms:
            reasons.append(f"p99 {s.p99_ms:.0f} ms > {self.sizes.p99_limit_ms:.0f}")
        s.passed = not reasons
        s.why = "; ".join(reasons)


# -- scenarios ---------------------------------------------------------------------


async def fixed_rate_steps(
    bench: Bench, rooms: list[str], room_size: int, rates: Sequence[float], latency_rate: float
) -> tuple[Step, list[Step], list[dict[str, Any]]]:
    """The equal-load steps, lowest rate first, after an unrecorded warm-up step
    (`Sizes.warmup_s`): (the latency step, the steps run, every rate's figures).

    Every system runs the same rates for the same time, so deliveries per server
    CPU-second compare like for like (issue 17). Once a rate fails on a quiet machine,
    the higher ones are not run (the system is saturated below them) and are recorded
    as skipped; a failure under foreign load (after its re-run) does not stop them. The
    latency rate is always run.
    """
    sz = bench.sizes
    latency: Step | None = None
    run: list[Step] = []
    out: list[dict[str, Any]] = []
    failed_at: float | None = None
    ordered = sorted({*rates, latency_rate})
    if sz.warmup_s > 0:
        warm = await bench.step(rooms, room_size, ordered[0], sz.warmup_s)
        if not warm.passed:
            await bench.settle(warm.k)
    for rate in ordered:
        if failed_at is not None and rate != latency_rate:
            out.append(
                {
                    "rate_msgs_per_s": rate,
                    "passed": False,
                    "skipped": True,
                    "why": f"not run: saturated at {failed_at:g} msg/s",
                }
            )
            continue
        is_latency = rate == latency_rate
        duration = sz.latency_s if is_latency else sz.fixed_s
        s = await bench.step(rooms, room_size, rate, duration, retry_passed=True)
        run.append(s)
        if is_latency:
            latency = s
        if not s.passed:
            if failed_at is None and s.foreign_share <= sz.foreign_limit:
                failed_at = rate
            await bench.settle(s.k)
        out.append(s.fixed_rate_dict())
    assert latency is not None
    return latency, run, out


async def fanout(
    bench: Bench,
    *,
    rooms: list[str],
    room_size: int,
    start_rate: float,
    latency_rate: float,
    fixed_rates: Sequence[float] = (),
) -> dict[str, Any]:
    """S1/S2: efficiency at fixed rates (the latency rate among them), then a short
    search for the highest passing rate.

    The fixed-rate steps give the same-load efficiency (deliveries per server
    CPU-second at rates every system is run at: the headline); the search gives the
    maximum and the efficiency at each system's own best step, where batching helps
    the fast ones (and a saturated machine flatters them more, see `machine_saturated`).

    The search starts where the latency step's cost per delivery says one core
    would saturate, doubles the rate until a step fails (halves while none passed),
    then bisects (geometric mean) between the best pass and the lowest failure while
    the step and time budgets last.

    A step the harness bounded (a load-generator process saturated) counts as a
    failure, so the best step is always one the system itself sustained; when the
    lowest failure above it is such a step, the system's real maximum was not found
    and the scenario is marked invalid with that step's reason. A best step on a
    saturated machine (`machine_saturated`) counts, and is marked: its maximum is a
    lower bound, for every system alike.
    """
    sz = bench.sizes
    latency, fixed_steps, fixed = await fixed_rate_steps(
        bench, rooms, room_size, fixed_rates, latency_rate
    )
    passed_fixed = [s for s in fixed_steps if s.passed]
    steps: list[Step] = []
    best: Step | None = None
    fail: Step | None = None
    estimate = latency.deliveries_per_server_cpu_s * sz.search_start_cores / room_size
    if math.isfinite(estimate) and estimate > 0:
        start_rate = float(f"{estimate:.2g}")
    # A passing fixed-rate step is a floor: halving below it would measure nothing new.
    floor = passed_fixed[-1].rate if passed_fixed else start_rate / 8
    rate = start_rate
    started = time.perf_counter()
    for _ in range(sz.max_steps):
        s = await bench.step(rooms, room_size, rate, sz.step_s)
        steps.append(s)
        if s.passed:
            best = s
        else:
            fail = s
            await bench.settle(s.k)
        if fail is None:
            rate *= 2
        elif best is None:
            rate /= 2
            if rate <= floor:
                break
        else:
            if fail.rate / best.rate < 1.2:
                break
            rate = math.sqrt(best.rate * fail.rate)
        if time.perf_counter() - started > sz.search_budget_s:
            break
    if best is None and passed_fixed:
        best = passed_fixed[-1]
    top = best or (steps[0] if steps else latency)
    above = [s for s in steps if not s.passed and (best is None or s.rate > best.rate)]
    ceiling = min(above, key=lambda s: s.rate) if above else None
    bound_by = ceiling if ceiling is not None and ceiling.harness_bound else None
    if bound_by is not None:
        invalid_reason = f"harness-bound at {bound_by.rate:g} msg/s: {bound_by.why}"
    else:
        invalid_reason = "" if best else "no step passed"
    return {
        "rooms": len(rooms),
        "room_size": room_size,
        "max_deliveries_per_s": best.deliveries_per_s if best else 0.0,
        "max_rate_msgs_per_s": best.rate if best else 0.0,
        "deliveries_per_server_cpu_s": top.deliveries_per_server_cpu_s,
        "efficiency_from": "best passing step" if best else "first step (none passed)",
        "efficiency_rate_msgs_per_s": top.rate,
        # Same load for every system: the fixed-rate latency step (its rate is a run
        # parameter, not found by the search), so these compare like for like.
        "same_load_rate_msgs_per_s": latency.rate,
        "same_load_deliveries_per_s": latency.deliveries_per_s,
        "same_load_deliveries_per_server_cpu_s": latency.deliveries_per_server_cpu_s,
        "same_load_server_cpu_s": latency.server_cpu_s,
        "same_load_valid": latency.passed,
        "same_load_reason": latency.why,
        "fixed_rates": fixed,
        "latency_rate_msgs_per_s": latency_rate,
        "p50_ms": latency.p50_ms,
        "p99_ms": latency.p99_ms,
        "latency_step_passed": latency.passed,
        "loadgen_max_core": max((s.loadgen_max_core for s in [*fixed_steps, *steps]), default=0.0),
        "loadgen_share_at_best": top.loadgen_share,
        "foreign_share_max": max((s.foreign_share for s in [*fixed_steps, *steps]), default=0.0),
        "retried_steps": sum(s.retries for s in [*fixed_steps, *steps]),
        "search_bounded_by_loadgen": any(s.loadgen_saturated for s in steps),
        "harness_bound_steps": sum(s.harness_bound for s in [*fixed_steps, *steps]),
        "machine_saturated_at_best": top.machine_saturated,
        "machine_at_best": top.saturation,
        "max_bounded_by_harness": bound_by is not None,
        "valid": bound_by is None and best is not None,
        "invalid_reason": invalid_reason,
        "latency_step": latency.as_dict(),
        "steps": [s.as_dict() for s in steps],
    }


async def idle_memory(bench: Bench) -> dict[str, Any]:
    """S3: RSS growth of the server processes per idle websocket connection.

    A handful of connections is opened and closed first so that lazily imported code
    and first-use caches are in the "empty" figure, not charged to connections.
    """
    n = bench.sizes.s3_conns
    await bench.connect(min(20, n))
    await bench.close_clients()
    await asyncio.sleep(bench.sizes.s3_settle_s)
    empty = sum(rss_bytes(p) for p in bench.dep.pids)
    await bench.connect(n)
    await asyncio.sleep(bench.sizes.s3_settle_s)
    loaded = sum(rss_bytes(p) for p in bench.dep.pids)
    await bench.close_clients()
    return {
        "conns": n,
        "rss_empty_bytes": empty,
        "rss_loaded_bytes": loaded,
        "kb_per_conn": (loaded - empty) / n / 1024,
    }


async def publisher_throughput(publisher: Worker, sizes: Sizes, quiet: Quiet) -> dict[str, Any]:
    """S4: publishes/s of one publisher, async then sync, to a room with no members."""
    out: dict[str, Any] = {}
    for mode in ("async", "sync"):
        busy_before = await quiet.wait()
        r = await publisher.call(
            "throughput",
            timeout_s=sizes.s4_seconds * 20 + 60,
            mode=mode,
            seconds=sizes.s4_seconds,
            max_n=sizes.s4_max_publishes,
        )
        r.pop("cpu_s", None)
        r["machine_busy_before"] = busy_before
        out[mode] = r
    return out
