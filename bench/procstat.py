"""Process CPU time and RSS read from /proc, plus small OS helpers.

/proc is read directly (not psutil) so the harness needs no compiled dependency and
can measure any process it knows the pid of: our gateway, Node, redis-server alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import time
from collections.abc import Iterable

CLOCK_TICKS_PER_S: float = float(os.sysconf("SC_CLK_TCK"))
PAGE_BYTES: int = os.sysconf("SC_PAGE_SIZE")


def _process_cpu_clock(pid: int) -> int:
    """Linux's clockid for the CPU-time clock of process ``pid`` (glibc's
    ``clock_getcpuclockid``: ``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``)."""
    return ((~pid) << 3) | 2


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all threads, exited ones too); 0.0 if gone.

    Read from the process's CPU-time clock, to the nanosecond: ``/proc/<pid>/stat``
    counts 10 ms ticks, so two readings of two server processes could be 40 ms off,
    over 10 % of the ~0.3 s of server CPU a fast system spends in S1's 5 s latency
    step, whose efficiency is compared across systems. ``/proc`` is the fallback.
    """
    with contextlib.suppress(OSError):
        return time.clock_gettime(_process_cpu_clock(pid))
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0.0
    # The command name (field 2) may contain spaces; fields resume after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def total_cpu_seconds(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except OSError:
        return 0


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; children inherit it.

    5,000 client sockets plus server and broker sockets exceed the common 1,024
    default. Returns the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for brokers that need one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine_busy_seconds() -> tuple[float, float, float]:
    """(busy, total, interrupt) CPU seconds of the whole machine since boot, all cores.

    Interrupt time (irq + softirq) is charged to no process; on loopback it is mostly
    the benchmark's own TCP traffic, so callers keep it apart from "foreign" load.
    """
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    interrupt = fields[5] + fields[6]
    return (
        (total - idle) / CLOCK_TICKS_PER_S,
        total / CLOCK_TICKS_PER_S,
        interrupt / CLOCK_TICKS_PER_S,
    )


def event_loop_of(pid: int) -> str:
    """The event loop a server process runs on, read from the process itself.

    ``uvloop`` when uvloop's extension module is mapped into ``pid`` (the servers
    here import uvloop only to run on it), ``node`` for Node (libuv), ``asyncio`` for
    another Python process, ``unknown`` if ``pid`` is gone or is something else.
    """
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            maps = f.read()
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return "unknown"
    if b"/uvloop/loop." in maps:
        return "uvloop"
    if exe.startswith("node"):
        return "node"
    if exe.startswith("python") or b"libpython" in maps:
        return "asyncio"
    return "unknown"


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop running this coroutine (for ready lines)."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]
