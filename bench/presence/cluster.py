"""The two systems the presence benchmark starts: Sailcast (one NATS server with
JetStream, N gateways with JWT identities and presence rules) and the reference, Node
socket.io 4 on the redis adapter (N servers, one redis-server).

Both live inside a :class:`bench.delivery.processes.Processes` (plus the redis broker
of :class:`bench.brokers.Brokers`), so every process they start is stopped however the
run ends. Clients are spread ``i % N`` over the servers by the harness.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

import jwt

from bench.brokers import Brokers
from bench.delivery.processes import (
    Child,
    NatsNode,
    Processes,
    gateway_argv,
    metrics_page,
)
from bench.procstat import total_cpu_seconds

NODE_DIR: Final = Path(__file__).resolve().parent.parent / "node"
JWT_TTL_S: Final = 3600
INFO_CLAIM: Final = "info"
PRESENCE_METRIC_WORDS: Final = (
    "presence",
    "directory",
    "with_user",
    "connect_rooms",
    "after_connect",
    "forced_disconnects",
)


@cache
def gateway_flags() -> frozenset[str]:
    """The long options this checkout's gateway accepts (so the bench runs, and says what
    it skipped, on a branch without the presence features)."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return frozenset(re.findall(r"(--[a-z0-9][a-z0-9-]*)", out.stdout))


def token(secret: str, user_id: str, info: Mapping[str, Any] | None = None) -> str:
    """An HS256 JWT whose `sub` is the socket's user id (and `info` its presence info)."""
    claims: dict[str, Any] = {"sub": user_id, "exp": int(time.time()) + JWT_TTL_S}
    if info is not None:
        claims[INFO_CLAIM] = dict(info)
    return jwt.encode(claims, secret, algorithm="HS256")


def parse_metrics(text: str, words: Sequence[str] = PRESENCE_METRIC_WORDS) -> dict[str, float]:
    """Sample lines of a /metrics page whose name has one of ``words`` (no `_created`)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "_created" in line:
            continue
        name, _, value = line.rpartition(" ")
        if name and any(w in name for w in words):
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


async def gateway_samples(child: Child, words: Sequence[str]) -> dict[str, float]:
    """`parse_metrics` of a started gateway's /metrics page; a gateway that does not
    answer is an error (a bench figure must not be read from a missing page)."""
    page = await metrics_page(child)
    if page is None:
        raise RuntimeError(f"{child.name}: /metrics did not answer 200")
    return parse_metrics(page, words)


def metric_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Counters' growth and gauges' last value between two scrapes (summed by name over
    labels is left to the reader: the keys keep their labels)."""
    out: dict[str, float] = {}
    for key, value in after.items():
        out[key] = value - before.get(key, 0.0) if "_total" in key else value
    return out


def sum_family(samples: Mapping[str, float], family: str) -> float:
    """Sum of every sample of ``family`` (all label sets)."""
    return sum(v for k, v in samples.items() if k == family or k.startswith(family + "{"))


@dataclass(kw_only=True)
class SailcastCluster:
    """One NATS server and ``gateways`` gateways; workers talk to it with a Publisher."""

    procs: Processes
    gateways: int = 3
    extra_flags: Sequence[str] = ()
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    prefix: str = field(default_factory=lambda: f"prs{secrets.token_hex(3)}")
    nats: list[NatsNode] = field(default_factory=list)
    servers: list[Child] = field(default_factory=list)

    @property
    def nats_url(self) -> str:
        return self.nats[0].url

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{s.port}" for s in self.servers]

    @property
    def server_pids(self) -> list[int]:
        return [s.pid for s in self.servers]

    @property
    def broker_pids(self) -> list[int]:
        return [n.child.pid for n in self.nats]

    def argv(self, index: int) -> list[str]:
        info = ["--jwt-info-claim", INFO_CLAIM] if "--jwt-info-claim" in gateway_flags() else []
        return gateway_argv(
            self.nats_url, self.prefix, f"prs-{index}",
            "--before-connect", "jwt", "--jwt-secret", self.secret, *info, *self.extra_flags,
        )  # fmt: skip

    async def start(self) -> None:
        self.nats = await self.procs.nats_cluster(1)
        for i in range(self.gateways):
            self.servers.append(await self.procs.spawn(f"gateway{i}", self.argv(i)))

    def server_cpu_s(self) -> float:
        return total_cpu_seconds(self.server_pids)

    def broker_cpu_s(self) -> float:
        return total_cpu_seconds(self.broker_pids)

    async def metrics(self) -> dict[str, float]:
        """The presence-related samples of every gateway, summed over gateways."""
        total: dict[str, float] = {}
        for child in self.servers:
            page = await metrics_page(child)
            if page is None:
                continue
            for key, value in parse_metrics(page).items():
                total[key] = total.get(key, 0.0) + value
        return total


@dataclass(kw_only=True)
class NodeCluster:
    """``servers`` Node socket.io servers on the redis adapter; server 0 answers the
    harness's fetchSockets requests on its stdin."""

    procs: Processes
    brokers: Brokers
    servers_wanted: int = 3
    key: str = field(default_factory=lambda: f"prs{secrets.token_hex(3)}")
    servers: list[Child] = field(default_factory=list)

    @staticmethod
    def unavailable_reason() -> str | None:
        import shutil

        if shutil.which("node") is None:
            return "node is not installed"
        if shutil.which("redis-server") is None:
            return "redis-server is not installed (bench/setup.sh)"
        if not (NODE_DIR / "node_modules" / "@socket.io" / "redis-adapter").is_dir():
            return "bench/node/node_modules missing: run bench/setup.sh"
        return None

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{s.port}" for s in self.servers]

    @property
    def server_pids(self) -> list[int]:
        return [s.pid for s in self.servers]

    @property
    def broker_pids(self) -> list[int]:
        return list(self.brokers.pids.values())

    async def start(self) -> None:
        await self.brokers.ensure(frozenset({"redis"}))
        assert self.brokers.redis_url is not None
        argv = ["node", str(NODE_DIR / "members_server.js")]
        argv += ["--redis-url", self.brokers.redis_url, "--key", self.key]
        for i in range(self.servers_wanted):
            self.servers.append(await self.procs.spawn(f"node{i}", argv, stdin=(i == 0)))

    def server_cpu_s(self) -> float:
        return total_cpu_seconds(self.server_pids)

    def broker_cpu_s(self) -> float:
        return total_cpu_seconds(self.broker_pids)
