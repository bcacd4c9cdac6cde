"""Real npm clients against gateway.engine (in-process, tests/engine_server.py).

sails.io.js 1.2.1 with the socket.io-client 2.0.3 it bundles (Engine.IO v3), the same
SDK on socket.io-client 4 and socket.io-client 4 alone (Engine.IO v4) each connect,
receive an event the server emits to their socket id, and make a virtual request
``GET /x`` whose ack is a Sails JWR. The npm packages come from tests/e2e/js's
package-lock.json (``bash tests/e2e/setup.sh``); tests/e2e/js/client.js is the driver.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.engine_server import EngineServer, StartEngine, start_engine

pytestmark = pytest.mark.e2e

__all__ = ["start_engine"]  # the fixture

JS_DIR = Path(__file__).parent / "js"
STEP_TIMEOUT_S = 15.0


@pytest_asyncio.fixture
async def server(start_engine: StartEngine) -> AsyncIterator[EngineServer]:
    yield await start_engine(ping_interval_s=25, ping_timeout_s=20)


class NodeClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def step(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), STEP_TIMEOUT_S)
            if not line:
                stderr = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"client exited early: {stderr.decode(errors='replace')}")
            text = line.decode().strip()
            if text.startswith("{"):
                data: dict[str, Any] = json.loads(text)
                return data

    async def expect(self, *steps: str) -> dict[str, dict[str, Any]]:
        """The next steps, in any order (upgrade may come before or after the others)."""
        got: dict[str, dict[str, Any]] = {}
        while set(got) != set(steps):
            data = await self.step()
            assert data["step"] in steps, data
            got[data["step"]] = data
        return got


async def start_client(url: str, stack: str, transports: str) -> NodeClient:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "sails.io.js").is_dir():
        pytest.fail("the npm clients are missing: run `bash tests/e2e/setup.sh` (needs node)")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS_DIR / "client.js"),
        url,
        stack,
        transports,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return NodeClient(proc)


@pytest.mark.parametrize(
    ("stack", "transports", "eio"),
    [
        pytest.param("sio2", "websocket", 3, id="sails.io.js+sio2-websocket"),
        pytest.param("sio2", "polling,websocket", 3, id="sails.io.js+sio2-polling-upgrade"),
        pytest.param("sio2", "polling", 3, id="sails.io.js+sio2-polling"),
        pytest.param("sio4-shim", "websocket", 4, id="sails.io.js+sio4-websocket"),
        pytest.param("sio4-raw", "websocket", 4, id="sio4-websocket"),
        pytest.param("sio4-raw", "polling,websocket", 4, id="sio4-polling-upgrade"),
    ],
)
async def test_client_connects_gets_event_and_jwr(
    server: EngineServer, stack: str, transports: str, eio: int
) -> None:
    client = await start_client(server.base, stack, transports)
    try:
        connect = await client.step()
        assert connect["step"] == "connect", connect
        socket_id = connect["id"]
        # the server's socket id is the client's socket.id (Sails relies on it)
        queries = {sid: query for sid, query, _auth in server.connects}
        assert socket_id in queries
        query = queries[socket_id].split("&")
        assert f"EIO={eio}" in query
        assert "__sails_io_sdk_version=1.2.1" in query
        if eio == 3:
            assert socket_id == connect["engineId"]  # socket.io 2: id is the engine sid
        else:
            assert socket_id != connect["engineId"]
        assert connect["transport"] in transports.split(",")

        server.conns[socket_id].emit("announce", {"hello": socket_id})
        expected = ["event", "jwr", "done"]
        if "," in transports:
            expected.append("upgrade")
        steps = await client.expect(*expected)

        assert steps["event"]["data"] == {"hello": socket_id}
        jwr = steps["jwr"]
        assert jwr["statusCode"] == 200
        assert jwr["headers"] == {"x-sailcast": "yes"}
        assert jwr["body"] == {"url": "/x?q=1", "data": {"a": 1}, "sid": socket_id}
        [(sid, request)] = server.requests
        assert sid == socket_id
        assert request["method"] == "get"
        if "," in transports:
            assert steps["upgrade"]["transport"] == "websocket"
        assert await asyncio.wait_for(client.proc.wait(), STEP_TIMEOUT_S) == 0
    finally:
        if client.proc.returncode is None:
            client.proc.kill()
            await client.proc.wait()
