"""Adapter for reference (c): Node socket.io v4 + Redis adapter, Redis emitter publisher.

Both sides are the npm packages themselves (bench/node/, installed by bench/setup.sh),
so the figures are Node's own, not a Python re-implementation of its protocol.
``--server-loop`` does not apply: Node runs on libuv.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.brokers import Brokers
from bench.systems.base import PublisherSpec, ServerProcessSystem

NODE_DIR: Path = Path(__file__).resolve().parent.parent / "node"


class NodeSocketioRedis(ServerProcessSystem):
    name = "node-redis"
    label = "Node socket.io + Redis (ref)"
    needs = frozenset({"redis"})

    def unavailable_reason(self) -> str | None:
        if shutil.which("node") is None:
            return "node is not installed"
        if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
            return "bench/node/node_modules missing: run bench/setup.sh"
        return None

    def _node(self, script: str, brokers: Brokers) -> tuple[str, ...]:
        assert brokers.redis_url is not None
        redis = ("--redis-url", brokers.redis_url, "--key", self.prefix)
        return ("node", str(NODE_DIR / script), *redis)

    def server_command(self, brokers: Brokers, index: int) -> Sequence[str]:
        return self._node("server.js", brokers)

    def publisher_spec(self, brokers: Brokers) -> PublisherSpec:
        return PublisherSpec(worker=self._node("publisher.js", brokers))

    def info(self) -> dict[str, str]:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
        return {"node": out.stdout.strip()}
