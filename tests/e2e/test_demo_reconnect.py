"""The live demo page comes back by itself after its gateway restarts.

sails.io.js >= 1.1 does not reconnect unless told (`io.sails.reconnection`); behind
Sailcast a rolling restart closes every websocket (1001) so that clients reconnect
elsewhere, so the demo page sets it, as docs/sails-clients.md tells apps to.
Headless Chromium, the stock sails.io.js bundle, the demo worker in its own process;
tests/e2e/js/demo_reconnect.js drives the page.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.e2e.demo_kit import JS_DIR, ROOT, SAILS_IO_JS, require_tools, wait_for_worker
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.e2e

STEP_TIMEOUT_S = 40.0


@pytest.mark.usefixtures("demo_worker")
async def test_the_demo_page_reconnects_after_a_gateway_restart(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    node = require_tools()
    page_files = {"static_dir": ROOT / "gateway" / "static", "sails_io_js": SAILS_IO_JS}
    gw = gateway_factory("before", **page_files)
    await wait_for_worker(gw)
    client = socketio.AsyncClient(reconnection=False)  # one item for the page to reload
    await client.connect(f"{gw.url}?__sails_io_sdk_version=1.2.1", transports=["websocket"])
    created = await client.call(
        "post", {"method": "post", "url": "/item", "data": {"text": "survives"}}, timeout=5
    )
    assert created["statusCode"] == 200
    await client.disconnect()

    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS_DIR / "demo_reconnect.js"),
        gw.url,
        str(tmp_path / "chromium-profile"),
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = proc.stdout, proc.stderr
    assert out is not None
    assert err is not None
    steps: list[dict[str, Any]] = []

    async def step() -> dict[str, Any]:
        while True:
            line = await asyncio.wait_for(out.readline(), STEP_TIMEOUT_S)
            assert line, (steps, (await err.read()).decode()[-2000:])
            if line.startswith(b"{"):
                steps.append(json.loads(line))
                assert steps[-1]["step"] != "error", steps
                return steps[-1]

    try:
        ready = await step()
        assert ready["step"] == "ready"
        assert ready["reconnection"] is True
        assert ready["items"] == ["survives"]
        # a rolling restart: drain (websockets closed with 1001), a new gateway on the port
        gw.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(gw.proc.wait, 20) == 0
        gateway_factory("after", port=gw.port, **page_files)
        assert (await step())["step"] == "disconnected"
        back = await step()
        assert back["step"] == "back"
        assert back["conn"] == "connected"
        assert back["items"] == ["survives"]  # fetched again on the new connection
        done = await step()
        assert done == {"step": "done", "problems": []}
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
