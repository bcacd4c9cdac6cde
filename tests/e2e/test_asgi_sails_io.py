"""The real sails.io.js 1.2.1 client against a gateway whose requests and client
events a FastAPI app answers through the ASGI bridge (publisher/asgi.py):
`io.socket.get('/users/3?q=x')` is the app's route, a view joins the requester to a
model room and a broadcast reaches it. tests/e2e/js/asgi_client.js is the driver."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher
from publisher.asgi import AsgiBridge
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).parent / "js"
STEP_TIMEOUT_S = 15.0


async def test_sails_io_js_requests_are_answered_by_a_fastapi_app(
    gateway_factory: Callable[..., GatewayProcess],
    nats_server: EmbeddedNats,
    prefix: str,
    publisher: Publisher,
) -> None:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "sails.io.js").is_dir():
        pytest.fail("the npm clients are missing: run `bash tests/e2e/setup.sh` (needs node)")
    from tests.support.fastapi_app import app

    pub = await Publisher.connect(nats_server.url, prefix=prefix)
    service = await AsgiBridge(app, events=("typing",)).start(pub)
    gw = gateway_factory()
    proc = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "asgi_client.js"), gw.url, cwd=JS_DIR, stdout=asyncio.subprocess.PIPE
    )
    steps: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        while "done" not in steps:
            line = await asyncio.wait_for(proc.stdout.readline(), STEP_TIMEOUT_S)
            assert line, f"the client exited after {steps}"
            data = json.loads(line)
            assert data["step"] != "timeout", steps
            steps[data["step"]] = data
            if data["step"] == "subscribe":
                await publisher.model("user").publish_update(7, {"name": "ada"})
        assert await asyncio.wait_for(proc.wait(), STEP_TIMEOUT_S) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
        await service.stop()
        await pub.close()
    sid = steps["get"]["id"]
    get = steps["get"]["jwr"]
    assert get["statusCode"] == 200
    assert get["headers"] == {"content-type": "application/json"}
    assert get["body"] == {
        "id": 3,
        "q": "x",
        "socket": sid,
        "stateSocket": sid,
        "greeting": "hello from the lifespan",
    }
    assert steps["ack"]["ack"] == {"heard": "typing", "args": [{"on": True}]}
    assert steps["subscribe"]["jwr"] == {"body": {"subscribed": 7}, "statusCode": 201}
    assert steps["user"]["msg"] == {"verb": "updated", "id": 7, "data": {"name": "ada"}}
