"""Systems under test. To add one, write an adapter and list it in ``SYSTEMS``.

``REFERENCE`` is the system every figure is divided by, and ``FLOOR`` (the least a
Python server can do, issue 17) as well; the efficiency figures are also divided by
``SECOND_REFERENCE`` (what a Python user picks today).
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
from bench.systems.floor import FloorReference
from bench.systems.node_redis import NodeSocketioRedis
from bench.systems.plain import PlainAiohttp
from bench.systems.psio_redis import PythonSocketioRedis
from bench.systems.sailcast import Sailcast
from bench.systems.sailcast_history import SailcastHistory

SYSTEMS: dict[str, type[ServerProcessSystem]] = {
    cls.name: cls
    for cls in (FloorReference, PlainAiohttp, PythonSocketioRedis, NodeSocketioRedis, Sailcast)
}
SYSTEMS[SailcastHistory.name] = SailcastHistory  # issue 11: history on, beside sailcast
REFERENCE: str = PlainAiohttp.name
SECOND_REFERENCE: str = PythonSocketioRedis.name
FLOOR: str = FloorReference.name

__all__ = [
    "FLOOR",
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
