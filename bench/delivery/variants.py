"""The variants of the delivery benchmark: which system, which history, which fault."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Final

from bench.delivery.processes import Processes
from bench.delivery.targets import NODE_DIR, NodeTarget, SailcastTarget, Target

CLIENTS_DIR: Final = NODE_DIR.parent / "delivery"

FAULTS: Final = ("none", "kill-gateway", "rolling-restart", "kill-nats-node")


@dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    label: str
    make: Callable[[Processes], Target]
    fault: str = "none"
    recovery: bool = False
    """Whether this variant is meant to resume sessions (its figures then say so)."""

    def unavailable_reason(self) -> str | None:
        if shutil.which("node") is None:
            return "node is not installed"
        if not (CLIENTS_DIR / "node_modules" / "sails.io.js").is_dir():
            return "bench/delivery/node_modules missing: run bench/setup.sh"
        if self.name.startswith("node-"):
            if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
                return "bench/node/node_modules missing: run bench/setup.sh"
            if self.name == "node-redis" and shutil.which("redis-server") is None:
                return "redis-server is not installed"
        elif find_spec("gateway") is None or find_spec("publisher") is None:
            return "the sailcast packages are not importable"
        return None


def _sailcast(*, history: bool, nats_nodes: int = 1) -> Callable[[Processes], Target]:
    def make(procs: Processes) -> Target:
        return SailcastTarget(procs, gateways=2, history=history, nats_nodes=nats_nodes)

    return make


def _node(*, csr: bool, servers: int) -> Callable[[Processes], Target]:
    def make(procs: Processes) -> Target:
        return NodeTarget(procs, csr=csr, servers=servers)

    return make


VARIANTS: Final[dict[str, Variant]] = {
    v.name: v
    for v in (
        Variant(
            name="sailcast-off",
            label="Sailcast, recovery off (2 gw)",
            make=_sailcast(history=False),
        ),
        Variant(
            name="sailcast-on",
            label="Sailcast, recovery on (2 gw)",
            make=_sailcast(history=True),
            recovery=True,
        ),
        Variant(
            name="sailcast-on-kill",
            label="  + gateway SIGKILL mid-run",
            make=_sailcast(history=True),
            fault="kill-gateway",
            recovery=True,
        ),
        Variant(
            name="sailcast-on-rolling",
            label="  + rolling restart of all gw",
            make=_sailcast(history=True),
            fault="rolling-restart",
            recovery=True,
        ),
        Variant(
            name="sailcast-on-nats-loss",
            label="  + 1 of 3 NATS nodes lost (R3)",
            make=_sailcast(history=True, nats_nodes=3),
            fault="kill-nats-node",
            recovery=True,
        ),
        Variant(
            name="node-csr",
            label="Node socket.io CSR, 1 node (ref)",
            make=_node(csr=True, servers=1),
            recovery=True,
        ),
        Variant(
            name="node-redis",
            label="Node socket.io redis, 2 nodes (ref)",
            make=_node(csr=False, servers=2),
        ),
    )
}
