"""Run one delivery variant: servers, balancer, clients, publisher, faults, scores.

Order: start the target (brokers, servers, join worker), the balancer in front of the
servers, the client processes (half socket.io-client v4, half sails.io.js); when every
client has joined its room, start the forced disconnects and the publisher together;
the fault of the variant fires at a fixed point of the publishing; when publishing
ends, stop the disconnects, let the clients come back and catch up (grace), collect
what each received and score it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import orjson

from bench.delivery.balancer import Balancer
from bench.delivery.processes import Child, ProcessError, Processes
from bench.delivery.scoring import ClientRecord, score_run
from bench.delivery.targets import Published, Target
from bench.delivery.variants import CLIENTS_DIR, Variant
from bench.harness import progress
from bench.procstat import cpu_seconds, machine_busy_seconds

CONNECT_BATCH: Final = 50
FAULT_AT_FRACTION: Final = 0.4
"""The fault fires this far into the publishing (the rest shows the recovery from it)."""
KINDS: Final = ("v4", "sails")


@dataclass(frozen=True, kw_only=True)
class Options:
    clients: int
    rooms: int
    duration_s: float
    rate_per_room: float
    kill_every_s: float
    jitter: float
    offline_s: float
    grace_s: float
    raw_dir: Path | None = None
    """Where to keep each client process's report (what every client received)."""


class ClientProcess:
    """One ``node clients.js`` process: N clients of one kind."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.ready: dict[str, Any] = {}

    @classmethod
    async def start(cls, procs: Processes, config: dict[str, Any]) -> ClientProcess:
        argv = ["node", str(CLIENTS_DIR / "clients.js"), orjson.dumps(config).decode()]
        child = await procs.spawn(f"clients-{config['kind']}", argv, ready_line=False, stdin=True)
        return cls(child)

    async def command(self, line: str) -> None:
        stdin = self.child.proc.stdin
        assert stdin is not None
        stdin.write(line.encode() + b"\n")
        await stdin.drain()

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next stdout line of ``event`` (others are logged)."""
        stdout = self.child.proc.stdout
        assert stdout is not None

        async def read() -> dict[str, Any]:
            while True:
                line = await stdout.readline()
                if not line:
                    raise ProcessError(f"{self.child.name} exited (see the log)")
                msg = orjson.loads(line)
                if msg.get("event") == event:
                    return dict(msg)
                if msg.get("event") == "error":
                    raise ProcessError(f"{self.child.name}: {msg.get('error')}")

        try:
            return await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            raise ProcessError(f"{self.child.name}: no {event!r} within {timeout:.0f} s") from None


async def _fault(variant: Variant, target: Target, delay_s: float) -> list[str]:
    """Fire the variant's fault after ``delay_s``; returns what happened, timed."""
    await asyncio.sleep(delay_s)
    stamp = time.strftime("%H:%M:%S")
    if variant.fault == "kill-gateway":
        return [f"{stamp} {await target.kill_server(0)}"]
    if variant.fault == "rolling-restart":
        return [f"{stamp} rolling restart begins", *await target.rolling_restart()]
    if variant.fault == "kill-nats-node":
        return [f"{stamp} {await target.kill_nats_node()}"]
    return []


async def run_variant(variant: Variant, opts: Options, log: TextIO) -> dict[str, Any]:
    """Run ``variant``; returns its record (scores, events, facts). Stops every process."""
    procs = Processes(log)
    target = variant.make(procs)
    balancer: Balancer | None = None
    rooms = [f"room{i}" for i in range(opts.rooms)]
    events: list[str] = []
    record: dict[str, Any] = {"label": variant.label, "target": "", "fault": variant.fault}
    try:
        await target.start()
        record["target"] = target.label
        balancer = await Balancer(target.ports).start()
        lb = balancer
        target.on_backend_change = lambda old, new: lb.replace(old, new)
        n_v4 = (opts.clients + 1) // 2
        counts = {"v4": n_v4, "sails": opts.clients - n_v4}
        base = {
            "url": balancer.url,
            "rooms": rooms,
            "killEveryS": opts.kill_every_s,
            "jitter": opts.jitter,
            "offlineS": opts.offline_s,
            "connectBatch": CONNECT_BATCH,
        }
        clients: list[ClientProcess] = []
        first = 0
        for kind in KINDS:
            if counts[kind] == 0:
                continue
            config = {**base, "kind": kind, "count": counts[kind], "first": first}
            if kind == "sails" and variant.recovery:  # recovery off: stock sails.io.js
                config["addonUrl"] = target.addon_url()
            clients.append(await ClientProcess.start(procs, config))
            first += counts[kind]
        connect_timeout = 30 + opts.clients / 10
        for c in clients:
            c.ready = await c.expect("ready", connect_timeout)
        addon = next(
            (c.ready.get("addon") for c in clients if c.child.name.endswith("sails")), None
        )
        record["addon"] = addon
        progress(f"{variant.name}: {opts.clients} clients joined; sails add-on: {addon}")

        load = _LoadMeter([c.child.pid for c in clients])
        for c in clients:
            await c.command("go")
        fault = asyncio.create_task(_fault(variant, target, opts.duration_s * FAULT_AT_FRACTION))
        published: Published = await target.publish(
            rooms, rate_per_room=opts.rate_per_room, duration_s=opts.duration_s
        )
        for c in clients:
            await c.command("calm")
        events += await fault
        await asyncio.sleep(opts.grace_s)
        record["load"] = load.read()

        reports: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="sailcast-delivery-") as tmp:
            for c in clients:
                path = Path(tmp) / f"{c.child.name}.json"
                await c.command(f"report {path}")
                await c.expect("reported", 60)
                reports += orjson.loads(path.read_bytes())["clients"]
                if opts.raw_dir is not None:
                    opts.raw_dir.mkdir(parents=True, exist_ok=True)
                    kept = opts.raw_dir / f"{variant.name}-{c.child.name}.json"
                    kept.write_bytes(path.read_bytes())
        if opts.raw_dir is not None:
            sent = {"sent_at_ms": published.sent_at_ms, "failed": published.failed}
            (opts.raw_dir / f"{variant.name}-published.json").write_bytes(orjson.dumps(sent))
        records = [ClientRecord.from_report(r) for r in reports]
        record["scores"] = {
            "all": score_run(records, published.sent_at_ms, published.failed).summary(),
            **{
                kind: score_run(
                    [r for r in records if r.kind == kind], published.sent_at_ms, published.failed
                ).summary()
                for kind in KINDS
                if counts[kind]
            },
        }
        record["published"] = {
            "per_room": {r: len(t) for r, t in published.sent_at_ms.items()},
            "failed": sum(len(f) for f in published.failed.values()),
            "retries": published.retries,
            "errors": published.errors,
        }
        record["disconnect_reasons"] = _reasons(reports)
        record["join_failures"] = sum(int(r.get("join_failures", 0)) for r in reports)
        record["connect_errors"] = sum(int(r.get("connect_errors", 0)) for r in reports)
        record["balancer"] = {
            "routed": {str(p): n for p, n in balancer.routed.items()},
            "refused": balancer.refused,
            "backend_errors": dict(balancer.errors),
        }
        record["facts"] = await target.facts()
    except (ProcessError, OSError, TimeoutError, NotImplementedError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        progress(f"{variant.name}: ERROR {record['error']}")
    finally:
        record["events"] = events
        if balancer is not None:
            await balancer.close()
        await target.close()
        await procs.close()
    return record


class _LoadMeter:
    """The load generator's own CPU (client processes, this driver with its balancer
    and, for Sailcast, the publisher and join worker) and the machine's, over a span."""

    def __init__(self, client_pids: list[int]) -> None:
        self.pids = client_pids
        self.wall = time.perf_counter()
        self.clients = sum(cpu_seconds(p) for p in client_pids)
        self.driver = time.process_time()
        self.machine = machine_busy_seconds()

    def read(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        busy, total, _irq = machine_busy_seconds()
        return {
            "wall_s": wall,
            "clients_cpu_s": sum(cpu_seconds(p) for p in self.pids) - self.clients,
            "driver_cpu_s": time.process_time() - self.driver,
            "machine_busy_share": (busy - self.machine[0]) / max(1e-9, total - self.machine[1]),
        }


def _reasons(reports: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reports:
        for _t, reason, forced in r["disconnects"]:
            key = f"{reason}{' (forced)' if forced else ''}"
            out[key] = out.get(key, 0) + 1
    return out
