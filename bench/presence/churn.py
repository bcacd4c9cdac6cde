"""Part 2: presence under churn.

``sockets`` sockets with user ids (every fifth user has a second tab on another
gateway, :mod:`bench.presence.people`) join and leave one presence room at a steady
rate for a bounded time, through a worker's ``pub.sockets.join`` / ``leave`` (each
change is in effect when its call returns, so the harness knows the truth). Three
observers, one per gateway, stay in the room throughout: the events each receives,
against the membership changes made, give the coalescing ratio. After the churn and a
settling pause, every member's view (``presence_state`` + ``presence`` diffs, or the
last ``presence_count`` in a count-only room) must equal the truth.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from bench.presence.cluster import SailcastCluster, metric_delta, sum_family, token
from bench.presence.people import info_of, user_of
from bench.presence.pool import ClientPool
from bench.presence.views import PRESENCE, PRESENCE_COUNT, PRESENCE_STATE, Truth, mismatches

OBSERVERS: Final = 3
SEED: Final = 12
MAX_IN_FLIGHT: Final = 200
SHOWN_MISMATCHES: Final = 10


@dataclass(frozen=True, kw_only=True)
class ChurnSpec:
    room: str
    count_only: bool
    sockets: int
    rate: float
    """Membership changes per second (joins and leaves together)."""
    duration_s: float
    settle_s: float
    label: str


def observer_user(k: int) -> str:
    return f"obs{k}"


async def connect(cluster: SailcastCluster, pool: ClientPool, sockets: int) -> dict[int, str]:
    """``sockets`` churners (0..sockets-1) and the observers after them (one per gateway)."""

    def query(i: int) -> str:
        uid = user_of(i) if i < sockets else observer_user(i - sockets)
        return "token=" + quote(token(cluster.secret, uid, info_of(uid)))

    await pool.connect(cluster.urls, range(sockets + OBSERVERS), query)
    return pool.sids


async def run_churn(
    cluster: SailcastCluster, pool: ClientPool, pub: Any, spec: ChurnSpec
) -> dict[str, Any]:
    """One variant on clients already connected by :func:`connect` (left out of the room
    at the end)."""
    sids = pool.sids
    churners = list(range(spec.sockets))
    observers = list(range(spec.sockets, spec.sockets + OBSERVERS))
    user = {i: (user_of(i) if i < spec.sockets else observer_user(i - spec.sockets)) for i in sids}
    rng = random.Random(SEED)
    inside: set[int] = set(observers) | set(rng.sample(churners, spec.sockets // 2))

    # Start: observers and half of the churners in the room, then quiet.
    await asyncio.gather(*(pub.sockets.join(sids[i], spec.room) for i in sorted(inside)))
    await asyncio.sleep(spec.settle_s)
    await pool.reset()
    metrics0 = await cluster.metrics()
    cpu0 = (cluster.server_cpu_s(), cluster.broker_cpu_s(), pool.cpu_s())

    per_user: Counter[str] = Counter(user[i] for i in inside)
    changes = Counter[str]()
    busy: set[int] = set()
    errors: list[str] = []
    pending: set[asyncio.Task[None]] = set()

    async def toggle(i: int) -> None:
        joining = i not in inside
        try:
            if joining:
                await pub.sockets.join(sids[i], spec.room)
            else:
                await pub.sockets.leave(sids[i], spec.room)
        except Exception as exc:
            changes["failed"] += 1
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        finally:
            busy.discard(i)
        u = user[i]
        if joining:
            inside.add(i)
            per_user[u] += 1
            changes["joins"] += 1
            changes["user_joins"] += per_user[u] == 1
        else:
            inside.discard(i)
            per_user[u] -= 1
            changes["leaves"] += 1
            changes["user_leaves"] += per_user[u] == 0

    loop = asyncio.get_running_loop()
    started = loop.time()
    total = int(spec.rate * spec.duration_s)
    for n in range(total):
        due = started + n / spec.rate
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        free = [i for i in churners if i not in busy] if len(busy) < MAX_IN_FLIGHT else []
        if not free:
            changes["skipped"] += 1
            continue
        i = rng.choice(free)
        busy.add(i)
        task = asyncio.create_task(toggle(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(list(pending))
    churn_s = loop.time() - started
    await asyncio.sleep(spec.settle_s)
    elapsed_s = loop.time() - started

    cpu1 = (cluster.server_cpu_s(), cluster.broker_cpu_s(), pool.cpu_s())
    metrics = metric_delta(metrics0, await cluster.metrics())
    stats = await pool.stats()
    members = sorted(inside)
    views = await pool.views(spec.room)
    truth = Truth.of({sids[i]: user[i] for i in members})
    bad = mismatches(
        {sids[i]: v for i, v in views.items()},
        truth,
        [sids[i] for i in members],
        count_only=spec.count_only,
    )
    observed = [views.get(i, {}) for i in observers]
    kind = "counts" if spec.count_only else "events"
    per_observer = sum(v.get(kind, 0) for v in observed) / len(observers)
    socket_changes = changes["joins"] + changes["leaves"]
    user_changes = changes["user_joins"] + changes["user_leaves"]
    received = stats["received"]
    delivered = sum(received.get(k, 0) for k in (PRESENCE, PRESENCE_STATE, PRESENCE_COUNT))

    # Leave the room empty for the next variant.
    await asyncio.gather(*(pub.sockets.leave(sids[i], spec.room) for i in members))
    return {
        "label": spec.label,
        "room": spec.room,
        "count_only": spec.count_only,
        "sockets": spec.sockets,
        "observers": OBSERVERS,
        "rate": spec.rate,
        "duration_s": spec.duration_s,
        "churn_s": churn_s,
        "settle_s": spec.settle_s,
        "socket_changes": socket_changes,
        "user_changes": user_changes,
        "changes": dict(changes),
        "received": received,
        "delivered": delivered,
        "delivered_per_s": delivered / elapsed_s,
        "events_per_observer": per_observer,
        "coalescing_ratio": socket_changes / per_observer if per_observer else None,
        "user_coalescing_ratio": user_changes / per_observer if per_observer else None,
        "deltas_per_event": (
            sum(v.get("deltas", 0) for v in observed) / (per_observer * len(observers))
            if per_observer and not spec.count_only
            else None
        ),
        "final_members": len(members),
        "final_users": len(truth.users),
        "mismatches": len(bad),
        "mismatch_examples": dict(list(bad.items())[:SHOWN_MISMATCHES]),
        "malformed": sum(v.get("malformed", 0) for v in views.values()),
        "server_cpu_s": cpu1[0] - cpu0[0],
        "broker_cpu_s": cpu1[1] - cpu0[1],
        "clients_cpu_s": cpu1[2] - cpu0[2],
        "elapsed_s": elapsed_s,
        "gateway_metrics": {
            k: v for k, v in metrics.items() if "presence" in k or "directory" in k
        },
        "cancelled_in_window": sum_family(metrics, "sailcast_gateway_presence_coalesced_total"),
        "gateways_sent_state_count": sum(
            metrics.get(f'sailcast_gateway_presence_events_total{{kind="{k}"}}', 0.0)
            for k in ("state", "count")
        ),
        "clients_received_state_count": received.get(PRESENCE_STATE, 0)
        + received.get(PRESENCE_COUNT, 0),
        "errors": errors,
    }
