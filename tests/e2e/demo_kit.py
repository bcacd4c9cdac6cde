"""The live demo in the e2e tests: where its page, bundle and browser are, and how to
wait for its worker (the worker fixture is in conftest.py)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
import socketio

from tests.helpers import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).parent / "js"
CHROMIUM = Path("/usr/bin/chromium")
SAILS_IO_JS = JS_DIR / "node_modules" / "sails.io.js" / "dist" / "sails.io.js"
RUN_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 15.0


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
