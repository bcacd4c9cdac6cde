"""A request storm from many sockets on two gateways while worker processes come and go:
every request gets exactly one answer.

Workers are real processes (tests/integration/storm_worker.py) sharing the queue
group. While 30 sockets each keep one virtual request in flight, a third and a fourth
worker start, two workers stop gracefully (SIGTERM: leave the group, finish what they
hold) and one is killed (SIGKILL: what it held, and what NATS routed to it before the
server saw its socket close, can only time out, 504). There is always at least one
worker, so no request may find nobody (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import socketio

from gateway.embedded_nats import EmbeddedNats
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SDK_QUERY = "__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node"
CLIENTS = 30
TIMEOUT_S = 2.0
"""The gateways' --virtual-request-timeout-s: how long a killed worker's requests wait."""
STEP_TIMEOUT_S = 20.0
DEATH_NOTICED_S = 0.5
"""How long after the killed worker is reaped the NATS server may still route to it: the
kernel closes its socket at death, and the server drops the subscription on reading EOF.
A request published in that window goes to a dead socket and can only time out."""


class Worker:
    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.handled: list[str] | None = None

    @classmethod
    async def start(cls, nats_url: str, prefix: str, name: str) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.storm_worker",
            nats_url,
            prefix,
            name,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        worker = cls(name, proc)
        assert await worker._line() == "ready"
        return worker

    async def _line(self) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), STEP_TIMEOUT_S)
        return line.decode().strip()

    async def stop(self) -> None:
        """SIGTERM: the worker drains and reports what it answered."""
        self.proc.send_signal(signal.SIGTERM)
        self.handled = orjson.loads(await self._line())["handled"]
        await asyncio.wait_for(self.proc.wait(), STEP_TIMEOUT_S)

    async def kill(self) -> None:
        self.proc.kill()
        await self.proc.wait()


async def test_request_storm_while_workers_come_and_go(
    gateway_factory: Any, nats_server: EmbeddedNats, prefix: str
) -> None:
    gws: list[GatewayProcess] = [
        gateway_factory(f"storm{i}", virtual_request_timeout_s=TIMEOUT_S) for i in range(2)
    ]
    workers = {n: await Worker.start(nats_server.url, prefix, n) for n in ("w1", "w2")}
    clients = []
    for i in range(CLIENTS):
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(f"{gws[i % 2].url}?{SDK_QUERY}", transports=["websocket"])
        clients.append(client)

    answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
    sent: list[str] = []
    sent_at: dict[str, float] = {}
    storming = True
    answered = asyncio.Event()
    in_flight_at_kill: set[str] = set()
    kill_at = dead_at = 0.0

    async def storm(i: int, client: socketio.AsyncClient) -> None:
        k = 0
        while storming:
            rid = f"{i}-{k}"
            k += 1
            done = asyncio.Event()

            def on_answer(jwr: dict[str, Any], rid: str = rid, done: asyncio.Event = done) -> None:
                answers[rid].append(jwr)  # counted: a second answer would show here
                done.set()
                answered.set()

            sent.append(rid)
            sent_at[rid] = time.monotonic()
            await client.emit("get", {"method": "get", "url": f"/work/{rid}"}, callback=on_answer)
            await asyncio.wait_for(done.wait(), TIMEOUT_S + 5)

    async def churn() -> None:
        nonlocal storming, in_flight_at_kill, kill_at, dead_at

        async def progress(n: int) -> None:  # let some requests through between steps
            target = len(answers) + n
            deadline = time.monotonic() + STEP_TIMEOUT_S
            while len(answers) < target and time.monotonic() < deadline:
                answered.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answered.wait(), deadline - time.monotonic())

        await progress(200)
        workers["w3"] = await Worker.start(nats_server.url, prefix, "w3")
        await progress(200)
        await workers["w1"].stop()
        await progress(200)
        workers["w4"] = await Worker.start(nats_server.url, prefix, "w4")
        await progress(200)
        in_flight_at_kill = set(sent) - set(answers)
        kill_at = time.monotonic()
        await workers["w2"].kill()
        dead_at = time.monotonic()
        await progress(200)
        await workers["w3"].stop()
        await progress(200)
        storming = False

    try:
        await asyncio.wait_for(
            asyncio.gather(churn(), *(storm(i, c) for i, c in enumerate(clients))), 60
        )
        await workers["w4"].stop()
    finally:
        for client in clients:
            await client.disconnect()
        for w in workers.values():
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    await w.kill()

    # every request: exactly one answer
    assert len(sent) == len(set(sent)) > 1000
    assert sorted(answers) == sorted(sent)
    assert all(len(a) == 1 for a in answers.values())
    statuses = Counter(a[0]["statusCode"] for a in answers.values())
    assert set(statuses) <= {200, 504}, statuses  # never 503: a worker was always there
    # only what the killed worker held: in flight at the kill, or sent before the NATS
    # server could drop the dead worker's subscription (a clean CI clone of b6f952f saw
    # 15 timeouts with 14 in flight at the kill)
    timed_out = {rid for rid, (jwr,) in answers.items() if jwr["statusCode"] == 504}
    outside = {
        rid: round(sent_at[rid] - kill_at, 3)
        for rid in timed_out - in_flight_at_kill
        if not kill_at <= sent_at[rid] <= dead_at + DEATH_NOTICED_S
    }
    assert not outside, f"timed out, sent this long after the kill (s): {outside}"
    after = [sent_at[rid] - dead_at for rid in timed_out - in_flight_at_kill]
    print(
        f"storm: {len(sent)} requests, {dict(statuses)}, {len(in_flight_at_kill)} in flight "
        f"at kill, {len(after)} timed out sent after it, the latest "
        f"{max(after, default=0):+.3f} s from the reaping"
    )

    # the workers that stopped gracefully answered each of their requests once, and
    # every request they answered reached its client
    by_worker: dict[str, set[str]] = defaultdict(set)
    for rid, (jwr,) in answers.items():
        if jwr["statusCode"] == 200:
            assert jwr["body"]["n"] == rid
            by_worker[jwr["body"]["worker"]].add(rid)
    for name in ("w1", "w3", "w4"):
        handled = workers[name].handled
        assert handled is not None
        assert len(handled) == len(set(handled)) > 0, name
        assert set(handled) == by_worker[name], name
    assert by_worker["w2"], "the killed worker had answered requests before"
    counted = Counter[str]()
    for gw in gws:
        for cls in ("2xx", "5xx"):
            counted[cls] += int(
                gw.metric(f'sailcast_gateway_virtual_requests_total{{status="{cls}"}}')
            )
    assert counted == Counter({"2xx": statuses[200], "5xx": statuses[504]})
