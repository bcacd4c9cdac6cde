"""S3 profile: where a gateway's memory per idle websocket connection goes.

``python -m bench.profile_s3 [--conns 2000] [--frames 25] [--out FILE]``

Starts nats-server and one real gateway the way the bench does (same flags, same
loop: uvloop when installed), opens and closes 20 connections (so lazily loaded code
and first-use caches are "empty"), then opens ``--conns`` idle raw Engine.IO v4
websocket clients (the bench's load generator) and compares the two states:

1. **RSS per connection** of a gateway run normally (``python -m gateway``): what S3
   measures, for one process.
2. **tracemalloc per connection** of a gateway run as ``python -m bench.traced_gateway``
   (tracemalloc started in the gateway process after its imports, then gateway.cli.main
   unchanged; a snapshot per SIGUSR1), split by who allocated: each traced block goes
   to the innermost frame of its traceback that is not the standard library —
   aiohttp and its helpers (multidict, yarl, ...) with
   uvloop, python-engineio / python-socketio, Sailcast's own modules (by file and
   line), nats-py — or, if only standard-library frames lead back to the event loop,
   to the standard library. Blocks allocated with no Python frame below the one
   running the loop (uvloop's C code: transports, handles) are shown as such under
   aiohttp + uvloop.

tracemalloc counts the bytes Python asked its allocators for; RSS also holds allocator
overhead (pymalloc pools and arenas, malloc headers, fragmentation) and memory allocated
outside them, so RSS per connection is larger than the traced figure: the report shows
the gap. CPU load on the machine does not change these figures, only the run time.
Prints the report and writes it to ``--out`` (default
``bench/results/s3-profile-<timestamp>.txt``).
"""

from __future__ import annotations

import argparse
import asyncio
import linecache
import os
import platform
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

from bench.brokers import Brokers
from bench.procstat import event_loop_of, raise_nofile_limit, rss_bytes
from bench.rpc import REPO_ROOT, Worker, run
from bench.systems.sailcast import Sailcast
from bench.traced_gateway import FRAMES_ENV, OUT_ENV

WARMUP_CONNS: int = 20
SETTLE_S: float = 2.0
SNAPSHOT_TIMEOUT_S: float = 300.0

AIOHTTP = "aiohttp + uvloop (with multidict, yarl, propcache, aiohappyeyeballs)"
ENGINEIO = "python-engineio + python-socketio"
SAILCAST = "Sailcast (gateway/, shared/)"
NATS = "nats-py"
STDLIB = "standard library only (no package frame before the event loop)"
OTHER = "other packages"
HARNESS = "bench wrapper"
AREAS: tuple[str, ...] = (AIOHTTP, ENGINEIO, SAILCAST, NATS, STDLIB, OTHER, HARNESS)

PACKAGE_AREAS: dict[str, str] = {
    **dict.fromkeys(
        ("aiohttp", "multidict", "yarl", "propcache", "frozenlist", "aiosignal",
         "aiohappyeyeballs", "uvloop"),
        AIOHTTP,
    ),
    **dict.fromkeys(("engineio", "socketio", "simple_websocket", "wsproto", "bidict"), ENGINEIO),
    "nats": NATS,
}  # fmt: skip
NO_FRAME = "<no Python frame below the loop's: uvloop's own C code (transports, handles)>"

STDLIB_DIR: str = sysconfig.get_paths()["stdlib"] + os.sep
REPO_DIR: str = str(REPO_ROOT) + os.sep
ENTRY_FILES: frozenset[str] = frozenset(
    {
        str(REPO_ROOT / "bench" / "traced_gateway.py"),
        str(REPO_ROOT / "gateway" / "cli.py"),
        str(REPO_ROOT / "gateway" / "__main__.py"),
    }
)
"""Frames below the event loop (the process's entry): attribution stops there."""


def classify(filename: str) -> tuple[str, str] | None:
    """(area, shown path) of a frame's file; None for the standard library."""
    _, sep, rest = filename.partition("site-packages" + os.sep)  # may be in ./.venv
    if sep:
        return PACKAGE_AREAS.get(rest.split(os.sep, 1)[0], OTHER), rest
    if filename.startswith(REPO_DIR):
        rel = filename[len(REPO_DIR) :]
        top = rel.split(os.sep, 1)[0]
        if top in ("gateway", "shared", "publisher"):
            return SAILCAST, rel
        return HARNESS, rel
    if filename.startswith("<frozen") or filename.startswith(STDLIB_DIR):
        return None
    return OTHER, filename


def _is_entry(filename: str) -> bool:
    if filename in ENTRY_FILES:
        return True
    return filename.endswith(
        (os.sep + "uvloop" + os.sep + "__init__.py", os.sep + "asyncio" + os.sep + "runners.py")
    )


def attribute(traceback: tracemalloc.Traceback) -> tuple[str, str, int]:
    """(area, file, line) a traced block is charged to (see the module docstring)."""
    frames = list(traceback)  # oldest first
    if not frames or frames[-1].filename == "<unknown>" or _is_entry(frames[-1].filename):
        # Innermost Python frame is the one running the loop: uvloop's C code allocated.
        return AIOHTTP, NO_FRAME, 0
    for frame in reversed(frames):  # innermost first
        if _is_entry(frame.filename):
            break
        where = classify(frame.filename)
        if where is not None:
            return where[0], where[1], frame.lineno
    inner = frames[-1]
    name = inner.filename.removeprefix(STDLIB_DIR)
    return STDLIB, name, inner.lineno


Site = tuple[str, str, int]
"""(area, file, line)"""


def by_site(snapshot: tracemalloc.Snapshot) -> tuple[dict[Site, int], dict[Site, int]]:
    """Bytes and block counts per (area, file, line)."""
    size: dict[tuple[str, str, int], int] = defaultdict(int)
    count: dict[tuple[str, str, int], int] = defaultdict(int)
    cache: dict[tracemalloc.Traceback, tuple[str, str, int]] = {}
    for trace in snapshot.traces:
        tb = trace.traceback
        key = cache.get(tb)
        if key is None:
            key = cache[tb] = attribute(tb)
        size[key] += trace.size
        count[key] += 1
    return size, count


@dataclass
class Measured:
    conns: int
    pid: int
    loop: str
    rss_empty: int = 0
    rss_loaded: int = 0
    snapshots: list[Path] = field(default_factory=list)

    @property
    def rss_kb_per_conn(self) -> float:
        return (self.rss_loaded - self.rss_empty) / self.conns / 1024


class TracedSailcast(Sailcast):
    """The bench's gateway command, or with a snapshot prefix run through
    :mod:`bench.traced_gateway` (tracemalloc on, a snapshot per SIGUSR1)."""

    def __init__(self, frames: int, snapshot_prefix: str | None) -> None:
        super().__init__()
        self.frames = frames
        self.snapshot_prefix = snapshot_prefix

    def server_command(self, brokers: Brokers, index: int) -> Sequence[str]:
        argv = list(super().server_command(brokers, index))
        if self.snapshot_prefix is None:
            return argv
        assert argv[1:3] == ["-m", "gateway"], argv
        return [argv[0], "-m", "bench.traced_gateway", *argv[3:]]

    def server_env(self, brokers: Brokers, index: int) -> dict[str, str]:
        if self.snapshot_prefix is None:
            return {}
        return {OUT_ENV: self.snapshot_prefix, FRAMES_ENV: str(self.frames)}


async def _connect(lg: Worker, url: str, n: int) -> None:
    reply = await lg.call("connect", timeout_s=600, urls=[url], indices=list(range(n)))
    if reply["failed"]:
        raise RuntimeError(f"{reply['failed']} of {n} connections failed: {reply['errors']}")


async def _snapshot(pid: int, prefix: str, n: int) -> Path:
    path = Path(f"{prefix}.{n}.snap")
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
    while not os.path.exists(path):  # noqa: ASYNC240 (one stat per 0.2 s)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no snapshot {path} after {SNAPSHOT_TIMEOUT_S} s")
        await asyncio.sleep(0.2)
    return path


async def measure(
    brokers: Brokers, lg: Worker, conns: int, frames: int, snapshot_prefix: str | None, log: TextIO
) -> Measured:
    """One gateway: warm up, RSS (+ snapshot), ``conns`` idle clients, RSS (+ snapshot)."""
    system = TracedSailcast(frames, snapshot_prefix)
    dep = await system.start(brokers, processes=1, log=log)
    pid = dep.pids[0]
    try:
        m = Measured(conns=conns, pid=pid, loop=event_loop_of(pid))
        await _connect(lg, dep.urls[0], WARMUP_CONNS)
        await lg.call("close_all")
        await asyncio.sleep(SETTLE_S)
        m.rss_empty = rss_bytes(pid)  # before the snapshot, which allocates
        if snapshot_prefix:
            m.snapshots.append(await _snapshot(pid, snapshot_prefix, 0))
        await _connect(lg, dep.urls[0], conns)
        await asyncio.sleep(SETTLE_S)
        m.rss_loaded = rss_bytes(pid)
        if snapshot_prefix:
            m.snapshots.append(await _snapshot(pid, snapshot_prefix, 1))
        await lg.call("close_all")
        return m
    finally:
        await system.stop()


def _versions() -> str:
    out = []
    for pkg in ("aiohttp", "uvloop", "python-engineio", "python-socketio", "nats-py"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} -")
    return ", ".join(out)


def _git_head() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "gateway", "shared"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "-"
    return head + (" (gateway/ or shared/ modified)" if dirty else "")


def report(plain: Measured, traced: Measured, frames: int, top: int) -> str:
    n = traced.conns
    a = tracemalloc.Snapshot.load(str(traced.snapshots[0]))
    b = tracemalloc.Snapshot.load(str(traced.snapshots[1]))
    size_a, count_a = by_site(a)
    size_b, count_b = by_site(b)
    keys = set(size_a) | set(size_b)
    delta = {k: size_b.get(k, 0) - size_a.get(k, 0) for k in keys}
    blocks = {k: count_b.get(k, 0) - count_a.get(k, 0) for k in keys}
    total = sum(delta.values())

    def kb(nbytes: float) -> str:
        return f"{nbytes / n / 1024:6.2f} KB"

    lines = [
        f"S3 profile: one gateway, {n:,} idle websocket connections (raw Engine.IO v4 clients)",
        f"date {time.strftime('%Y-%m-%d %H:%M:%S')}, commit {_git_head()}, "
        f"python {platform.python_version()}, {_versions()}",
        f"command: python -m bench.profile_s3 --conns {n} --frames {frames}",
        "",
        f"RSS per connection, gateway run normally (pid {plain.pid}, loop {plain.loop}): "
        f"{plain.rss_kb_per_conn:.1f} KB "
        f"({plain.rss_empty / 2**20:.1f} -> {plain.rss_loaded / 2**20:.1f} MiB)",
        f"tracemalloc per connection (traced gateway, loop {traced.loop}, {frames} frames): "
        f"{total / n / 1024:.1f} KB in {sum(blocks.values()) / n:.0f} blocks",
        f"RSS minus traced: {plain.rss_kb_per_conn - total / n / 1024:.1f} KB (allocator "
        "overhead, fragmentation and memory outside Python's allocators, less memory freed "
        "before and reused; two separate runs)",
        "",
        "By area (per connection; share of the traced growth):",
    ]
    per_area: dict[str, int] = defaultdict(int)
    blocks_area: dict[str, int] = defaultdict(int)
    for k, d in delta.items():
        per_area[k[0]] += d
        blocks_area[k[0]] += blocks[k]
    for area in AREAS:
        if per_area.get(area, 0) == 0 and blocks_area.get(area, 0) == 0:
            continue
        share = per_area[area] / total if total else 0.0
        lines.append(
            f"  {kb(per_area[area])}  {share:6.1%}  {blocks_area[area] / n:5.1f} blocks  {area}"
        )
    for area in AREAS:
        files: dict[str, int] = defaultdict(int)
        for k, d in delta.items():
            if k[0] == area:
                files[k[1]] += d
        shown = sorted(((d, f) for f, d in files.items() if d / n >= 1.0), reverse=True)
        if not shown:
            continue
        limit = len(shown) if area == SAILCAST else top
        lines += ["", f"{area}, by file (>= 1 byte per connection):"]
        lines += [f"  {kb(d)}  {f}" for d, f in shown[:limit]]
        if len(shown) > limit:
            rest = sum(d for d, _ in shown[limit:])
            lines.append(f"  {kb(rest)}  ({len(shown) - limit} more files)")
    for area, limit in ((SAILCAST, top * 3), (ENGINEIO, top), (AIOHTTP, top)):
        sites = sorted(
            ((d, k) for k, d in delta.items() if k[0] == area and k[2] and d / n >= 8),
            reverse=True,
        )
        if sites:
            lines += ["", f"{area}, top lines (>= 8 bytes per connection):"]
            lines += [f"  {kb(d)}  {k[1]}:{k[2]}  {_source(k[1], k[2])}" for d, k in sites[:limit]]
    return "\n".join(lines) + "\n"


def _source(shown: str, lineno: int) -> str:
    """The source line, shortened (``shown`` is repository- or site-packages-relative)."""
    for base in (REPO_DIR, *(p + os.sep for p in sys.path if p.endswith("site-packages"))):
        text = linecache.getline(base + shown, lineno).strip()
        if text:
            return text if len(text) <= 72 else text[:71] + "…"
    return ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.profile_s3", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--conns", type=int, default=2000, help="idle connections (default 2000)")
    p.add_argument("--frames", type=int, default=25, help="tracemalloc frames per block")
    p.add_argument("--top", type=int, default=8, help="files shown per area (Sailcast: all)")
    p.add_argument("--out", type=Path, help="report file (default bench/results/s3-profile-*)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out: Path = args.out or REPO_ROOT / "bench" / "results" / f"s3-profile-{stamp}.txt"
    log_path = REPO_ROOT / "bench" / "results" / "tmp" / f"s3-profile-{stamp}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    text = ""

    async def entry() -> None:
        nonlocal text
        with tempfile.TemporaryDirectory(prefix="s3-profile-") as tmp, log_path.open("a") as log:
            brokers = Brokers(log)
            lg = await Worker.spawn("bench.loadgen", name="loadgen", log=log)
            try:
                print(f"gateway run normally, {args.conns} connections ...", file=sys.stderr)
                plain = await measure(brokers, lg, args.conns, args.frames, None, log)
                print("gateway with tracemalloc ...", file=sys.stderr)
                prefix = str(Path(tmp) / "gateway")
                traced = await measure(brokers, lg, args.conns, args.frames, prefix, log)
                text = report(plain, traced, args.frames, args.top)
            finally:
                await lg.close()
                await brokers.stop()

    run(entry)
    print(text, end="")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"\nwritten to {out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
