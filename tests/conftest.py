"""Fixtures: one real nats-server per session, a fresh subject prefix per test, real
gateway processes and clients (tests/helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Final

import pytest

from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher
from publisher.router import Router, RouterService
from tests import skip_policy
from tests.helpers import (
    GatewayProcess,
    RecordingClient,
    connect_client,
    start_gateway,
    unique_prefix,
)
from tests.recovery_harness import CutProxy, NodeClient, start_node_client


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedNats]:
    server = EmbeddedNats().start()
    yield server
    server.close()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return unique_prefix(request.node.name)


@pytest.fixture
def gateway_factory(
    nats_server: EmbeddedNats, prefix: str
) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(gateway_id: str | None = None, **overrides: Any) -> GatewayProcess:
        gw = start_gateway(
            overrides.pop("nats_url", nats_server.url),
            prefix,
            gateway_id or f"gw{len(started)}",
            **overrides,
        )
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def two_gateways(gateway_factory: Callable[..., GatewayProcess]) -> list[GatewayProcess]:
    return [gateway_factory("gwa"), gateway_factory("gwb")]


@pytest.fixture
async def publisher(nats_server: EmbeddedNats, prefix: str) -> AsyncIterator[Publisher]:
    pub = await Publisher.connect(nats_server.url, prefix=prefix)
    yield pub
    await pub.close()


@pytest.fixture
async def serve(
    nats_server: EmbeddedNats, prefix: str
) -> AsyncIterator[Callable[[Router], Awaitable[RouterService]]]:
    """Start a router on a publisher of its own, as a worker process would (in this
    one); every service is stopped (drained) and its publisher closed at the end."""
    running: list[tuple[RouterService, Publisher]] = []

    async def start(router: Router) -> RouterService:
        pub = await Publisher.connect(nats_server.url, prefix=prefix)
        service = await router.start(pub)
        running.append((service, pub))
        return service

    yield start
    for service, pub in running:
        await service.stop()
        await pub.close()


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[..., Any]]:
    clients: list[RecordingClient] = []

    async def connect(gw: GatewayProcess, transport: str = "websocket") -> RecordingClient:
        rc = await connect_client(gw.url, transport)
        clients.append(rc)
        return rc

    yield connect
    for c in clients:
        await c.disconnect()


@pytest.fixture
async def proxies() -> AsyncIterator[Callable[[int], Awaitable[CutProxy]]]:
    """`await proxies(gateway_port)`: a cutting proxy (tests/recovery_harness.py)."""
    made: list[CutProxy] = []

    async def make(target: int) -> CutProxy:
        proxy = CutProxy(target)
        await proxy.start()
        made.append(proxy)
        return proxy

    yield make
    for p in made:
        await p.close()


@pytest.fixture
async def node_clients() -> AsyncIterator[Callable[..., Awaitable[NodeClient]]]:
    """`await node_clients(url, stack)`: an npm recovery client, closed at the end."""
    made: list[NodeClient] = []

    async def start(url: str, stack: str, events: str = "m", token: str = "") -> NodeClient:
        client = await start_node_client(url, stack, events, token)
        made.append(client)
        return client

    yield start
    for c in made:
        await c.close()


# -- measured figures ---------------------------------------------------------------
FIGURE_TESTS: Final = (
    "tests/faults/",
    "tests/integration/test_outage_and_sync.py::test_nats_restart_clients_stay_and_delivery_resumes",
    "tests/integration/test_drain.py::test_rolling_restart_clients_come_back_by_themselves",
    "tests/integration/test_slow_clients.py::",
)
"""Tests that print what they measured (docs/operations.md quotes them)."""
_figures: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep what a passed figure test printed: pytest captures it and would show it
    only for a failure, so a plain CI run would measure and never tell."""
    if report.when == "call" and report.passed and report.nodeid.startswith(FIGURE_TESTS):
        out = report.capstdout.strip()
        if out:
            _figures.append((report.nodeid, out))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A "measured figures" section after the run (with `-s` they were printed live)."""
    if not _figures:
        return
    terminalreporter.section("measured figures")
    for nodeid, out in _figures:
        terminalreporter.write_line(nodeid)
        for line in out.splitlines():
            terminalreporter.write_line(f"    {line}")


# -- skips ----------------------------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    """A skip not listed in tests/skip_policy.py fails the session."""
    if not config.pluginmanager.has_plugin(skip_policy.__name__):
        config.pluginmanager.register(skip_policy, skip_policy.__name__)
