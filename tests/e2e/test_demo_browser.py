"""The live demo in a real browser: headless Chromium, two pages, one shared list.

A gateway serves gateway/static/index.html with the stock sails.io.js bundle (from
the npm package, as `make run` does) and the demo worker runs as its own process
(`python -m publisher.demo`). tests/e2e/js/demo_browser.js drives Debian's chromium
through playwright-core: one page's change must show up in the other. Installed by
`bash tests/e2e/setup.sh` (npm ci, and `apt-get install chromium` when missing).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from gateway.embedded_nats import EmbeddedNats
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).parent / "js"
CHROMIUM = Path("/usr/bin/chromium")
SAILS_IO_JS = JS_DIR / "node_modules" / "sails.io.js" / "dist" / "sails.io.js"
RUN_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 15.0


@pytest.fixture
def demo_worker(nats_server: EmbeddedNats, prefix: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "SAILCAST_NATS_URL": nats_server.url,
        "SAILCAST_PREFIX": prefix,
        "SAILCAST_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "publisher.demo"], env=env, cwd=ROOT)
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def require_tools() -> str:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("the npm packages are missing: run `bash tests/e2e/setup.sh`")
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: run `bash tests/e2e/setup.sh` (apt)")
    return node


async def wait_for_worker(gw: GatewayProcess) -> None:
    """Until the worker answers (503 means it has not joined the queue group yet)."""
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(f"{gw.url}?__sails_io_sdk_version=1.2.1", transports=["websocket"])
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            jwr = await client.call("get", {"method": "get", "url": "/item"}, timeout=5)
            if jwr["statusCode"] == 200:
                return
            assert time.monotonic() < deadline, f"the demo worker never answered: {jwr}"
            await asyncio.sleep(0.1)
    finally:
        await client.disconnect()


async def test_two_browser_pages_edit_one_list(
    gateway_factory: Callable[..., GatewayProcess],
    demo_worker: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    node = require_tools()
    gw = gateway_factory(static_dir=ROOT / "gateway" / "static", sails_io_js=SAILS_IO_JS)
    await wait_for_worker(gw)

    profile = tmp_path / "chromium-profile"  # a fresh --user-data-dir
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS_DIR / "demo_browser.js"),
        gw.url,
        str(profile),
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    steps: list[dict[str, Any]] = [
        json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")
    ]
    assert proc.returncode == 0, (steps, stderr.decode(errors="replace")[-2000:])
    by_step = {s["step"]: s for s in steps}

    # the stock sails.io.js (socket.io-client 2.0.3) connects over its default transport
    ready = [s for s in steps if s["step"] == "ready"]
    assert [r["transport"] for r in ready] == ["websocket", "websocket"]
    # A added it; B saw it arrive, without reloading
    assert by_step["created"]["b"] == [{"text": "buy milk", "done": False}]
    assert by_step["created"]["a"] == by_step["created"]["b"]
    # B ticked it; A saw it done
    assert by_step["updated"]["a"] == [{"text": "buy milk", "done": True}]
    # A deleted it; B saw it go
    assert by_step["destroyed"]["b"] == []
    # B closed: the worker's after_disconnect hook told A
    assert [s["viewers"] for s in steps if s["step"] == "viewers"] == [2, 1]
    assert by_step["done"]["problems"] == []
