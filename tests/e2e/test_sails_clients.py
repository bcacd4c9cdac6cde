"""Real npm clients against real gateways, their requests answered by a Python worker.

Each client (tests/e2e/js/sails_app.js) connects to a gateway process, sends a virtual
request with every method, reads Sails' JWR and error shapes, has the worker join it
to a room and receives what the worker then broadcasts there; on disconnect, the
worker's after_disconnect hook hears of it. Stacks: sails.io.js 1.2.1 on
socket.io-client 2.0.3 (Engine.IO v3, what the official browser bundle ships),
sails.io.js on socket.io-client 4 (plain-options shim), socket.io-client 4 alone.
The npm packages come from tests/e2e/js/package-lock.json (`bash tests/e2e/setup.sh`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from publisher import Publisher
from publisher.router import Disconnected, Request, Response, Router
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).parent / "js"
RUN_TIMEOUT_S = 25.0
SECRET = "e2e-secret-e2e-secret-e2e-secret-0"


@pytest.fixture
async def worker(publisher: Publisher) -> AsyncIterator[asyncio.Queue[Disconnected]]:
    """The application: echo, an error, join a room and say something in it."""
    gone: asyncio.Queue[Disconnected] = asyncio.Queue()
    router = Router()

    @router.route("/echo/:m")
    async def echo(req: Request, res: Response) -> Response:
        return res.set("x-app", "echo").send(
            {"method": req.method, "query": req.query, "body": req.body, "m": req.params["m"]}
        )

    @router.get("/fail")
    async def fail(req: Request, res: Response) -> Response:
        return res.server_error("boom")

    @router.get("/bad")
    async def bad(req: Request, res: Response) -> Response:
        return res.bad_request("unknown model")  # Sails: through res.json

    @router.get("/headers")
    async def headers(req: Request) -> dict[str, Any]:
        return {"headers": req.headers, "requestId": req.request_id}

    @router.post("/room/:name/join")
    async def join(req: Request) -> dict[str, str]:
        await req.join(req.params["name"])
        return {"joined": req.params["name"]}

    @router.post("/room/:name/say")
    async def say(req: Request) -> str:
        text = req.param("text")
        await req.pub.sockets.broadcast(req.params["name"], "chat", {"text": text})
        return "said"

    router.after_disconnect(gone.put)
    service = await router.start(publisher)
    yield gone
    await service.stop()


async def run_client(url: str, stack: str, transports: str, *extra: str) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "socket.io-client-v4").is_dir():
        pytest.fail("the npm clients are missing: run `bash tests/e2e/setup.sh` (needs node)")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS_DIR / "sails_app.js"),
        url,
        stack,
        transports,
        *extra,
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
    steps = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    assert proc.returncode == 0, (steps, stderr.decode(errors="replace"))
    return steps


STACKS = [
    pytest.param("sio2", "websocket", id="sails.io.js+sio2-websocket"),
    pytest.param("sio2", "polling,websocket", id="sails.io.js+sio2-polling"),
    pytest.param("sio4-shim", "websocket", id="sails.io.js+sio4-websocket"),
    pytest.param("sio4-raw", "websocket", id="sio4-websocket"),
    pytest.param("sio4-raw", "polling,websocket", id="sio4-polling-upgrade"),
]


@pytest.mark.parametrize(("stack", "transports"), STACKS)
async def test_npm_client_requests_rooms_events_and_disconnect(
    two_gateways: list[GatewayProcess],
    worker: asyncio.Queue[Disconnected],
    stack: str,
    transports: str,
) -> None:
    gw = two_gateways[1]  # the worker reaches it through NATS only
    steps = await run_client(gw.url, stack, transports)
    kinds = [s["step"] for s in steps]
    assert kinds[0] == "connect", steps
    assert kinds[-1] == "done", steps
    socket_id = steps[0]["id"]
    jwrs = [s for s in steps if s["step"] == "jwr"]

    for method, jwr in zip(["get", "post", "put", "patch", "delete"], jwrs, strict=False):
        assert jwr["statusCode"] == 200, jwr
        assert jwr["headers"] == {"x-app": "echo"}
        assert jwr["body"] == {
            "method": method.upper(),
            "query": {"q": "1"},
            "body": {"a": 1},  # sails.io.js sends delete's data as `params`: merged
            "m": method,
        }
        assert not jwr.get("error")
    not_found, fail = jwrs[5], jwrs[6]
    assert (not_found["statusCode"], not_found["body"], not_found["headers"]) == (
        404,
        "Not Found",
        {},
    )
    assert (fail["statusCode"], fail["body"]) == (500, '"boom"')
    if stack != "sio4-raw":
        assert not_found["error"] is True  # the SDK's jwr.error for status >= 400
        assert fail["error"] is True
    assert jwrs[7]["body"] == {"joined": "lobby"}
    bad, headers = jwrs[9], jwrs[10]
    assert (bad["statusCode"], bad["body"], bad["headers"]) == (
        400,
        '"unknown model"',  # JSON text, as Sails' res.badRequest("unknown model")
        {"content-type": "application/json"},
    )
    # the request id is no header (Sails adds none); the worker has it beside them
    assert "x-request-id" not in headers["body"]["headers"]
    assert headers["body"]["requestId"].startswith(f"{gw.gateway_id}-")
    event = next(s for s in steps if s["step"] == "event" and s["event"] == "chat")
    assert event["data"] == {"text": f"hi from {stack}"}
    # the event was published after the join's answer and before the say's answer
    assert kinds.index("event") < len(kinds) - 1

    if stack == "sio4-raw":
        parse = next(s for s in steps if s["step"] == "parse")["ack"]
        assert list(parse) == ["code", "name", "status", "message", "details"]  # Sails' order
        assert parse["code"] == "SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ"
        assert parse["name"] == "Error (SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ):"
        assert parse["status"] == 400
        parse_event = [s for s in steps if s.get("event") == "sails:parseError"]
        assert parse_event[0]["data"]["code"] == "SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ"

    gone = await asyncio.wait_for(worker.get(), 10)
    assert gone.socket_id == socket_id
    assert gone.gateway_id == gw.gateway_id
    assert gone.rooms == ("lobby",)
    assert gone.handshake.query["__sails_io_sdk_platform"] == "node"


@pytest.mark.parametrize(
    "stack", [pytest.param("sio2", id="sails.io.js+sio2"), pytest.param("sio4-raw", id="sio4")]
)
async def test_npm_client_with_a_jwt(
    gateway_factory: Callable[..., GatewayProcess], worker: Any, stack: str
) -> None:
    gw = gateway_factory(before_connect="jwt", jwt_secret=SECRET)
    good = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    steps = await run_client(gw.url, stack, "websocket", good)
    assert steps[-1]["step"] == "done", steps

    expired = jwt.encode({"sub": "u1", "exp": int(time.time()) - 60}, SECRET, algorithm="HS256")
    steps = await run_client(gw.url, stack, "websocket", expired, "refused")
    # the reason reaches the client, then the connection ends (also for socket.io 2)
    assert steps == [{"step": "refused", "message": "Unauthorized: token expired", "closed": True}]


async def test_websocket_only_gateway_as_a_sails_app(
    gateway_factory: Callable[..., GatewayProcess], worker: Any
) -> None:
    """`--transports websocket`, Sails' default: sails.io.js (websocket, its default) and
    socket.io-client 4 on websocket work; a client that starts with polling is refused
    at its first request, as by a Sails app."""
    gw = gateway_factory(transports="websocket")
    for stack in ("sio2", "sio4-raw"):
        steps = await run_client(gw.url, stack, "websocket")
        assert steps[-1]["step"] == "done", steps
        assert steps[0]["transport"] == "websocket"
    for stack, transports in (("sio2", "polling"), ("sio4-raw", "polling,websocket")):
        steps = await run_client(gw.url, stack, transports, "-", "refused")
        assert steps == [{"step": "refused", "message": "xhr poll error", "closed": True}]
