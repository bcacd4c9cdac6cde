"""Where a server's time goes during a benchmark scenario: py-spy on its processes.

``python -m bench.profile_run --system sailcast --scenario S2 [--seconds 20]``

Runs ``bench.run`` for one system and one scenario, and while the scenario's load is on
(from a few seconds after the harness announces it) samples every server process of
the system with py-spy (non-blocking, so the server is not paused). Writes the
collapsed stacks and a summary (the functions with the most samples, on-CPU and
inclusive) under ``bench/results/profiles/`` (``--out``), for the issue 17 rule that a
missed target comes with a profile of where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import sys
import time
from pathlib import Path

from bench.rpc import REPO_ROOT

SERVER_MARKERS: dict[str, tuple[str, ...]] = {
    "sailcast": ("-m", "gateway"),
    "sailcast-history": ("-m", "gateway"),
    "floor": ("floor_server",),
    "plain": ("plain_server",),
}
"""How a system's server processes show in their command lines."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.profile_run", description=__doc__)
    p.add_argument("--system", default="sailcast", choices=sorted(SERVER_MARKERS))
    p.add_argument("--scenario", default="S2", choices=("S1", "S2"))
    p.add_argument("--seconds", type=float, default=20.0, help="sampling time")
    p.add_argument("--delay", type=float, default=4.0, help="wait after the scenario starts")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "profiles")
    p.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    p.add_argument("bench_args", nargs="*", help="more bench.run arguments, after --")
    return p.parse_args(argv)


def server_pids(root: int, markers: tuple[str, ...]) -> list[int]:
    """Descendants of `root` whose command line holds every marker."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    cmdlines: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children[ppid].append(int(entry))
        cmdlines[int(entry)] = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    found: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        for child in children.get(pid, []):
            stack.append(child)
            args = cmdlines.get(child, [])
            if all(any(m in a for a in args) for m in markers):
                found.append(child)
    return found


def summarize(collapsed: list[Path], top: int) -> str:
    """Self and inclusive sample counts per function over the collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for path in collapsed:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            own[frames[-1]] += n
            for frame in set(frames):
                incl[frame] += n
    if not total:
        return "no samples\n"
    lines = [f"{total} samples over {len(collapsed)} process(es)", "", "on CPU (self):"]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines) + "\n"


async def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    base = a.out / f"{stamp}-{a.system}-{a.scenario}"
    cmd = [
        sys.executable,
        "-m",
        "bench.run",
        "--systems",
        a.system,
        "--scenarios",
        a.scenario,
        "--out",
        str(REPO_ROOT / "bench" / "results" / "tmp"),
        "--no-chart",
        *a.bench_args,
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None
    log = (base.with_suffix(".bench.log")).open("w")
    started = False
    outputs: list[Path] = []
    spies: list[asyncio.subprocess.Process] = []
    try:
        async for raw in proc.stdout:
            line = raw.decode(errors="replace")
            log.write(line)
            sys.stdout.write(line)
            if started or f"{a.system}: {a.scenario} " not in line:
                continue
            started = True
            await asyncio.sleep(a.delay)
            pids = server_pids(proc.pid, SERVER_MARKERS[a.system])
            for pid in pids:
                out = base.with_suffix(f".{pid}.collapsed")
                outputs.append(out)
                spies.append(
                    await asyncio.create_subprocess_exec(
                        a.py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(a.seconds)),
                        "--rate",
                        str(a.rate),
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                    )
                )
            sys.stdout.write(f"[profile] sampling {pids} for {a.seconds:g} s\n")
        await proc.wait()
        for spy in spies:
            await spy.wait()
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        log.close()
    found = [p for p in outputs if p.exists()]
    summary = summarize(found, a.top)
    header = f"py-spy profile: {a.system} {a.scenario}, {a.seconds:g} s at {a.rate}/s\n"
    base.with_suffix(".txt").write_text(header + summary)
    sys.stdout.write(header + summary)
    return 0 if found else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
