"""`--log-format json`: one JSON object per line, and the lines about a socket or a
virtual request carry its `sid` and `request_id` as fields an operator can filter on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import socketio

from publisher import Publisher
from shared.subjects import Subjects
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.integration

ORIGIN = "http://app.example"
SDK_QUERY = "?__sails_io_sdk_version=1.2.1"
WAIT_S = 10.0


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the gateway's log, each of which must be a JSON object."""
    lines = [orjson.loads(raw) for raw in path.read_bytes().splitlines()]
    for line in lines:
        assert isinstance(line, dict), line
    return lines


async def log_line(path: Path, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first line of the gateway's log that `match` accepts (the gateway writes it
    before it answers, but the file is read from another process: poll it briefly)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        lines = read_lines(path)
        found = [line for line in lines if match(line)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no such log line in {lines}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def clients() -> AsyncIterator[list[socketio.AsyncClient]]:
    made: list[socketio.AsyncClient] = []
    yield made
    for client in made:
        if client.connected:
            await client.disconnect()


async def test_refusals_and_failed_requests_are_json_lines_with_their_ids(
    gateway_factory: Callable[..., GatewayProcess],
    publisher: Publisher,
    prefix: str,
    clients: list[socketio.AsyncClient],
    tmp_path: Path,
) -> None:
    log = tmp_path / "gateway.log"
    gw = gateway_factory(
        stderr_file=log,
        log_format="json",
        log_level="INFO",
        only_allow_origins=ORIGIN,
        virtual_request_timeout_s=0.5,
    )

    # a socket refused by a connection check (no Origin under --only-allow-origins)
    refused = socketio.AsyncClient(reconnection=False)
    clients.append(refused)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(gw.url + SDK_QUERY, transports=["websocket"], wait_timeout=5)
    line = await log_line(log, lambda ln: ln["msg"].startswith("refused socket"))
    assert (line["level"], line["logger"], line["reason"]) == ("INFO", "gateway.auth", "origin")
    assert isinstance(line["sid"], str)
    assert line["sid"]
    assert line["remote"] == "127.0.0.1"

    # a foreign Origin, refused by the engine at the HTTP handshake (no socket yet)
    foreign = socketio.AsyncClient(reconnection=False)
    clients.append(foreign)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await foreign.connect(
            gw.url + SDK_QUERY, headers={"Origin": "http://evil.example"}, transports=["websocket"]
        )
    line = await log_line(log, lambda ln: ln["msg"].startswith("refused origin"))
    assert (line["logger"], line["origin"], line["remote"]) == (
        "gateway.engine.origins",
        "http://evil.example",
        "127.0.0.1",
    )

    client = socketio.AsyncClient(reconnection=False)
    clients.append(client)
    await client.connect(
        gw.url + SDK_QUERY, headers={"Origin": ORIGIN}, transports=["websocket"], wait_timeout=5
    )
    sid = client.get_sid()

    # no worker: 503, logged with the client's own request id
    msg = {"method": "get", "url": "/nobody", "headers": {"X-Request-Id": "req-503"}, "data": {}}
    assert (await client.call("get", msg, timeout=WAIT_S))["statusCode"] == 503
    line = await log_line(log, lambda ln: ln.get("request_id") == "req-503")
    assert (line["level"], line["logger"], line["sid"]) == ("WARNING", "gateway.vrequests", sid)
    assert line["msg"].startswith("get /nobody: no worker")

    # a worker that never answers: 504, logged with the id the gateway made
    await publisher.nats.subscribe(Subjects(prefix).virtual_requests, cb=_ignore)
    await publisher.flush()
    msg = {"method": "get", "url": "/silent", "headers": {}, "data": {}}
    assert (await client.call("get", msg, timeout=WAIT_S))["statusCode"] == 504
    line = await log_line(log, lambda ln: "/silent" in ln["msg"])
    assert (line["level"], line["sid"]) == ("WARNING", sid)
    assert line["request_id"].startswith(f"{gw.gateway_id}-")
    assert "no worker answered in time" in line["msg"]


async def _ignore(msg: Any) -> None:
    return None
