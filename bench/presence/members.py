"""Part 1: who is in a room, cluster-wide, and what asking costs.

Rooms of each size (10, 1,000, 10,000 by default) are nested: socket ``i`` is in every
room whose size is above ``i``, so one set of ``max(size)`` sockets, spread ``i % 3``
over three servers, serves every size. Sailcast: a worker's ``pub.sockets.members``
(every page, ``limit`` members each) and ``pub.sockets.count``; Node socket.io 4 with the
redis adapter: ``io.in(room).fetchSockets()``, whose ``.length`` is also its count. Every
answer is checked against who the harness put in the room (``wrong``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Final, TextIO
from urllib.parse import quote

import orjson

from bench.delivery.processes import Child, ProcessError
from bench.harness import progress
from bench.presence.cluster import NodeCluster, SailcastCluster, token
from bench.presence.measure import Meter, Series
from bench.presence.people import info_of, user_of, users_among
from bench.presence.pool import ClientPool

JOIN_CONCURRENCY: Final = 256
CONVERGE_TIMEOUT_S: Final = 20.0
IDLE_S: Final = 2.0


def room_of(size: int) -> str:
    return f"members:{size}"


def rooms_of(index: int, sizes: Sequence[int]) -> list[str]:
    return [room_of(s) for s in sizes if index < s]


async def _join_all(pub: Any, sids: dict[int, str], sizes: Sequence[int]) -> None:
    gate = asyncio.Semaphore(JOIN_CONCURRENCY)

    async def one(i: int, sid: str) -> None:
        async with gate:
            await pub.sockets.join(sid, rooms_of(i, sizes))

    await asyncio.gather(*(one(i, s) for i, s in sids.items()))


async def _all_members(pub: Any, room: str, limit: int) -> tuple[list[Any], int]:
    """Every page of ``room``'s members; (members, pages)."""
    out: list[Any] = []
    cursor: Any = None
    pages = 0
    while True:
        page = await pub.sockets.members(room, cursor=cursor, limit=limit)
        pages += 1
        out.extend(page.members)
        cursor = page.cursor
        if not cursor:
            return out, pages


async def _converged(pub: Any, room: str, size: int) -> float:
    """Seconds until count(room) shows every member (the directory may trail joins)."""
    started = time.perf_counter()
    while True:
        with_all = (await pub.sockets.count(room)).sockets == size
        if with_all or time.perf_counter() - started > CONVERGE_TIMEOUT_S:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)


async def sailcast_members(
    cluster: SailcastCluster,
    pool: ClientPool,
    *,
    sizes: Sequence[int],
    queries: int,
    budget_s: float,
    limit: int,
) -> dict[str, Any]:
    """members (all pages) and count on every size; the clients are closed at the end."""
    from publisher import Publisher

    total = max(sizes)

    def query(i: int) -> str:
        uid = user_of(i)
        return "token=" + quote(token(cluster.secret, uid, info_of(uid)))

    conn = await pool.connect(cluster.urls, range(total), query)
    progress(f"  {total} sockets connected in {conn['seconds']:.1f} s")
    pub: Any = await Publisher.connect(cluster.nats_url, prefix=cluster.prefix)
    out: dict[str, Any] = {"connect_s": conn["seconds"], "series": [], "converge_s": {}}
    try:
        started = time.perf_counter()
        await _join_all(pub, pool.sids, sizes)
        out["join_s"] = time.perf_counter() - started
        progress(f"  joined in {out['join_s']:.1f} s")
        for size in sizes:
            out["converge_s"][str(size)] = await _converged(pub, room_of(size), size)
        meter = Meter(server_pids=cluster.server_pids, broker_pids=cluster.broker_pids)
        await meter.measure_idle(IDLE_S)
        out["idle_server_cores"] = meter.idle_server_cores
        for size in sizes:
            room = room_of(size)
            members = {pool.sids[i] for i in range(size)}
            users = users_among(range(size))

            series = Series(system="sailcast-members", size=size)
            before = meter.read()
            deadline = time.perf_counter() + budget_s
            while len(series.ms) < queries and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    got, pages = await _all_members(pub, room, limit)
                except Exception as exc:
                    series.failed += 1
                    series.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                series.ms.append((time.perf_counter() - t0) * 1000)
                series.pages += pages
                sids = [m.socket_id for m in got]
                if len(sids) != size or set(sids) != members or {m.user_id for m in got} != users:
                    series.wrong += 1
            series.charge(meter, before, caller_in_server=False)
            out["series"].append(series.summary())

            series = Series(system="sailcast-count", size=size)
            before = meter.read()
            deadline = time.perf_counter() + budget_s
            while len(series.ms) < queries and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    c = await pub.sockets.count(room)
                except Exception as exc:
                    series.failed += 1
                    series.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                series.ms.append((time.perf_counter() - t0) * 1000)
                if c.sockets != size or c.users != len(users):
                    series.wrong += 1
            series.charge(meter, before, caller_in_server=False)
            out["series"].append(series.summary())
            progress(f"  size {size}: done")
    finally:
        await pub.close()
        await pool.close_all()
    return out


async def _node_call(child: Child, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    assert child.proc.stdin is not None
    assert child.proc.stdout is not None
    child.proc.stdin.write(orjson.dumps(request) + b"\n")
    await child.proc.stdin.drain()
    line = await asyncio.wait_for(child.proc.stdout.readline(), timeout_s)
    if not line:
        raise ProcessError(f"{child.name} exited")
    reply: dict[str, Any] = orjson.loads(line)
    if not reply.get("ok"):
        raise ProcessError(f"{child.name}: {reply.get('error')}")
    return reply


async def node_fetch_sockets(
    cluster: NodeCluster,
    pool: ClientPool,
    *,
    sizes: Sequence[int],
    queries: int,
    budget_s: float,
    log: TextIO,
) -> dict[str, Any]:
    """fetchSockets on every size, from server 0; the clients are closed at the end."""
    total = max(sizes)
    conn = await pool.connect(
        cluster.urls, range(total), lambda i: "rooms=" + quote(",".join(rooms_of(i, sizes)))
    )
    progress(f"  {total} sockets connected in {conn['seconds']:.1f} s")
    out: dict[str, Any] = {"connect_s": conn["seconds"], "series": []}
    caller = cluster.servers[0]
    try:
        meter = Meter(server_pids=cluster.server_pids, broker_pids=cluster.broker_pids)
        await meter.measure_idle(IDLE_S)
        out["idle_server_cores"] = meter.idle_server_cores
        for size in sizes:
            room = room_of(size)
            series = Series(system="node-fetchSockets", size=size)
            before = meter.read()
            request = {"op": "fetch", "room": room, "n": queries, "budget_s": budget_s}
            reply = await _node_call(caller, request, budget_s + 60)
            series.charge(meter, before, caller_in_server=True)
            series.ms = [float(x) for x in reply["ms"]]
            series.failed = int(reply["failed"])
            series.errors = list(reply["errors"])
            series.wrong = sum(1 for n in reply["lengths"] if n != size)
            out["series"].append(series.summary())
            progress(f"  size {size}: done")
    finally:
        await pool.close_all()
    log.flush()
    return out
