"""Systems under test. To add one, write an adapter and list it in ``SYSTEMS``.

``REFERENCE`` is the system every figure is divided by; the efficiency figures are also
divided by ``SECOND_REFERENCE`` (what a Python user picks today).
"""

from __future__ import annotations

from bench.systems.base import (
    BenchPublisher,
    Deployment,
    PublisherSpec,
    ServerProcessSystem,
    SyncBenchPublisher,
    System,
)
from bench.systems.node_redis import NodeSocketioRedis
from bench.systems.plain import PlainAiohttp
from bench.systems.psio_redis import PythonSocketioRedis
from bench.systems.sailcast import Sailcast
from bench.systems.sailcast_history import SailcastHistory

SYSTEMS: dict[str, type[ServerProcessSystem]] = {
    cls.name: cls for cls in (PlainAiohttp, PythonSocketioRedis, NodeSocketioRedis, Sailcast)
}
SYSTEMS[SailcastHistory.name] = SailcastHistory  # issue 11: history on, beside sailcast
REFERENCE: str = PlainAiohttp.name
SECOND_REFERENCE: str = PythonSocketioRedis.name

__all__ = [
    "REFERENCE",
    "SECOND_REFERENCE",
    "SYSTEMS",
    "BenchPublisher",
    "Deployment",
    "PublisherSpec",
    "ServerProcessSystem",
    "SyncBenchPublisher",
    "System",
]
