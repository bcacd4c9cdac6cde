"""Fixtures of the fault tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.faults.faultkit import MonitoredNats, NatsCluster


@pytest.fixture
def monitored_nats() -> Iterator[MonitoredNats]:
    """A nats-server of this test's own, with its monitoring port (connz, subsz). Ask for
    it before gateway_factory, so that the gateways stop before it does."""
    server = MonitoredNats().start()
    yield server
    server.close()


@pytest.fixture
async def js_cluster() -> AsyncIterator[NatsCluster]:
    """Three JetStream nodes routed into one cluster, formed, with a meta leader (ask
    for it before gateway_factory, so that the gateways stop before it does)."""
    cluster = NatsCluster(jetstream=True).start()
    try:
        await cluster.formed()
        yield cluster
    finally:
        cluster.close()
