"""NatsBroker and MemoryBroker both implement gateway.broker.Broker: every member of the
Protocol, with the same parameters, sync or async alike."""

from __future__ import annotations

import inspect

import pytest

from gateway.broker import Broker
from gateway.broker.memory import MemoryBroker
from gateway.broker.nats_broker import NatsBroker

MEMBERS = sorted(name for name in vars(Broker) if not name.startswith("_") and name not in {"mro"})


def test_the_protocol_has_the_seam_the_core_relies_on() -> None:
    assert set(MEMBERS) >= {
        "connected",
        "set_handler",
        "set_listener",
        "subscribe",
        "unsubscribe",
        "publish",
        "request",
        "flush",
        "force_reconnect",
        "drain",
        "close",
    }


@pytest.mark.parametrize("impl", [NatsBroker, MemoryBroker])
@pytest.mark.parametrize("name", MEMBERS)
def test_implementation_matches_the_protocol(impl: type, name: str) -> None:
    spec = inspect.getattr_static(Broker, name)
    mine = inspect.getattr_static(impl, name, None)
    assert mine is not None, f"{impl.__name__} lacks {name}"
    if isinstance(spec, property):
        assert isinstance(mine, property), f"{impl.__name__}.{name} must be a property"
        return
    assert inspect.iscoroutinefunction(mine) == inspect.iscoroutinefunction(spec), name
    assert list(inspect.signature(mine).parameters) == list(inspect.signature(spec).parameters)
