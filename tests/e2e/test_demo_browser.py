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
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.demo_kit import (
    JS_DIR,
    ROOT,
    RUN_TIMEOUT_S,
    SAILS_IO_JS,
    require_tools,
    wait_for_worker,
)
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.e2e


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
