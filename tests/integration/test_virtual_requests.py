"""Virtual requests, connection hooks and origins, seen by real Socket.IO clients.

Real gateway processes and a real nats-server; the workers are publisher.router
services in this process (the request storm in test_request_storm.py uses worker
processes). Clients are python-socketio clients sending what sails.io.js sends:
`emit(<method>, {method, url, headers, data}, ack)` with the SDK query string.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import socketio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.embedded_nats import EmbeddedNats
from publisher import Model, ModelRegistry, Publisher, to_many, to_one
from publisher.router import (
    ConnectCheck,
    Disconnected,
    HttpError,
    Reject,
    Request,
    Response,
    Router,
    RouterService,
)
from shared.vrequest import METHODS
from tests.helpers import GatewayProcess, RecordingClient, quiet

pytestmark = pytest.mark.integration

SDK_QUERY = (
    "__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node&__sails_io_sdk_language=javascript"
)
JWR_KEYS = ["body", "headers", "statusCode"]
JSON = {"content-type": "application/json"}
PARSE_ERROR = {  # as recorded, but for `stack` (declared) and `details`
    "code": "SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ",
    "name": "Error (SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ):",
    "status": 400,
    "message": "Failed to parse incoming socket.io request.",
}
SECRET = "a-test-secret-of-reasonable-length-0123456789"
WAIT_S = 5.0

GatewayFactory = Callable[..., GatewayProcess]
Connect = Callable[..., Awaitable[RecordingClient]]
Serve = Callable[..., Awaitable[RouterService]]


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture
async def sails_client() -> AsyncIterator[Connect]:
    """Connect like sails.io.js (SDK query, websocket); records every event, and the
    connect error's message as the event `connect_error`."""
    clients: list[tuple[RecordingClient, aiohttp.ClientSession]] = []

    async def connect(
        gw: GatewayProcess,
        *,
        query: str = SDK_QUERY,
        headers: dict[str, str] | None = None,
        auth: Any = None,
        transport: str = "websocket",
    ) -> RecordingClient:
        session = aiohttp.ClientSession()
        client = socketio.AsyncClient(reconnection=False, http_session=session)
        rc = RecordingClient(client)
        clients.append((rc, session))

        def record(event: str, data: Any) -> None:
            rc.events.append((event, data))
            rc._changed.set()

        async def on_any(event: str, *args: Any) -> None:
            record(event, args[0] if len(args) == 1 else list(args))

        client.on("*", on_any)
        client.on("connect_error", lambda data: record("connect_error", data))
        url = f"{gw.url}?{query}" if query else gw.url
        transports = ["polling", "websocket"] if transport == "polling" else ["websocket"]
        try:
            await client.connect(
                url, headers=headers or {}, auth=auth, transports=transports, wait_timeout=10
            )
        except socketio.exceptions.ConnectionError as exc:
            exc.recording = rc  # for connect_error()
            raise
        return rc

    yield connect
    for rc, session in clients:
        await rc.disconnect()
        await session.close()


async def request(
    client: RecordingClient, method: str, url: Any, data: Any = None, **extra: Any
) -> Any:
    """What sails.io.js emits for io.socket.<method>(url, data, cb)."""
    msg = {"method": method, "headers": extra.pop("headers", {}), "data": data or {}, "url": url}
    msg.update(extra)
    return await client.client.call(method, msg, timeout=WAIT_S + 10)


def echo_router() -> Router:
    router = Router()

    async def echo(req: Request, res: Response) -> Response:
        return res.set("x-route", "echo").send(
            {
                "method": req.method,
                "url": req.url,
                "path": req.path,
                "params": req.params,
                "query": req.query,
                "body": req.body,
                "allParams": req.all_params(),
                "headers": req.headers,
                "socket": req.socket_id,
                "gateway": req.gateway_id,
                "requestId": req.request_id,
                "ip": req.ip,
                "ips": req.ips,
                "handshakeQuery": dict(req.handshake.query),
                "claims": req.claims,
            }
        )

    for method in METHODS:
        router.add(f"{method.upper()} /echo/:id?", echo)
    return router


# -- virtual requests -------------------------------------------------------------------------
async def test_every_method_is_answered_by_a_worker_as_a_jwr(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    await serve(echo_router())
    gw = gateway_factory()
    client = await sails_client(gw)
    for method in METHODS:
        jwr = await request(client, method, "/echo/7?x=1&y=two", {"y": 2, "z": [1, 2]})
        assert list(jwr) == JWR_KEYS
        assert jwr["statusCode"] == 200
        assert jwr["headers"] == {"x-route": "echo"}
        body = jwr["body"]
        assert body["method"] == method.upper()
        assert (body["path"], body["params"]) == ("/echo/7", {"id": "7"})
        assert body["query"] == {"x": "1", "y": "two"}
        assert body["body"] == {"y": 2, "z": [1, 2]}
        # Sails' allParams: path parameters over body over query string (jwr.10)
        assert body["allParams"] == {"x": "1", "y": 2, "z": [1, 2], "id": "7"}
        assert body["socket"] == client.sid
        assert body["gateway"] == gw.gateway_id
        assert body["ip"] == "127.0.0.1"
        assert body["handshakeQuery"]["__sails_io_sdk_version"] == "1.2.1"


async def test_request_shape_follows_sails(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    await serve(echo_router())
    gw = gateway_factory()
    client = await sails_client(
        gw, headers={"Origin": f"http://127.0.0.1:{gw.port}", "Cookie": "sails.sid=hs"}
    )
    jwr = await request(
        client,
        "put",
        "/echo",
        [1, 2, 3],
        headers={"Origin": "http://evil.example", "Cookie": "forged=1", "X-Thing": "yes"},
    )
    body = jwr["body"]
    assert body["body"] == [1, 2, 3]  # an array body stays an array (jwr.12)
    assert body["allParams"] == {"0": 1, "1": 2, "2": 3}
    # origin is pinned to the handshake and the handshake cookie wins; nothing is added:
    # the request id is beside the headers, not among them (Sails adds no header)
    assert body["headers"] == {
        "origin": f"http://127.0.0.1:{gw.port}",
        "cookie": "sails.sid=hs",
        "x-thing": "yes",
    }
    assert body["requestId"].startswith(f"{gw.gateway_id}-")
    # a client's own x-request-id is its header, and the request's id
    jwr = await request(client, "get", "/echo", headers={"X-Request-Id": "trace-42"})
    assert jwr["body"]["headers"]["x-request-id"] == "trace-42"
    assert jwr["body"]["requestId"] == "trace-42"
    # legacy `params` merged under `data`
    jwr = await request(client, "post", "/echo", {"a": 2}, params={"a": 1, "b": 1})
    assert jwr["body"]["body"] == {"a": 2, "b": 1}


async def test_req_ip_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    """The test client plays an ingress on loopback forwarding for 198.51.100.4 (which
    claims to forward for 203.0.113.9): only hops the gateway trusts are believed."""
    await serve(echo_router())
    forwarded = {"X-Forwarded-For": "203.0.113.9, 198.51.100.4"}
    seen = {}
    for trust in ("", "loopback", "true"):
        gw = gateway_factory(trust_proxy=trust)
        client = await sails_client(gw, headers=forwarded)
        body = (await request(client, "get", "/echo"))["body"]
        seen[trust] = (body["ip"], body["ips"])
    assert seen == {
        "": ("127.0.0.1", []),
        "loopback": ("198.51.100.4", ["198.51.100.4"]),
        "true": ("203.0.113.9", ["203.0.113.9", "198.51.100.4"]),
    }
    # a before-connect check adds its claims and keeps the addresses
    gw = gateway_factory(trust_proxy="loopback", before_connect="jwt", jwt_secret=SECRET)
    client = await sails_client(gw, headers=forwarded, auth={"token": token({"sub": "u9"})})
    body = (await request(client, "get", "/echo"))["body"]
    assert (body["ip"], body["ips"], body["claims"]["sub"]) == (
        "198.51.100.4",
        ["198.51.100.4"],
        "u9",
    )


async def test_set_cookie_is_stripped_and_kept_for_later_requests(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    router = Router()

    @router.get("/login")
    def login(req: Request, res: Response) -> Response:  # a plain handler
        return res.set("Set-Cookie", "sails.sid=s%3Aabc; Path=/; HttpOnly").ok({"ok": True})

    @router.get("/whoami")
    async def whoami(req: Request) -> Any:
        return {"cookie": req.header("cookie")}

    await serve(router)
    client = await sails_client(gateway_factory())
    assert (await request(client, "get", "/whoami"))["body"] == {"cookie": None}
    jwr = await request(client, "get", "/login")
    assert jwr == {"body": {"ok": True}, "headers": {}, "statusCode": 200}
    assert (await request(client, "get", "/whoami"))["body"] == {"cookie": "sails.sid=s%3Aabc"}


async def test_error_shapes(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    router = Router()

    @router.get("/oracle/fail")
    async def fail(req: Request, res: Response) -> Response:
        return res.server_error("boom")

    @router.get("/oracle/forbidden")
    async def forbidden(req: Request, res: Response) -> Response:
        return res.forbidden()

    @router.get("/oracle/empty")
    async def empty(req: Request) -> None:
        return None

    @router.get("/oracle/text")
    async def text(req: Request) -> str:
        return "plain text"

    @router.get("/oracle/headers")
    async def headers(req: Request, res: Response) -> Response:
        return res.set("x-oracle", "yes").status(201).json({"created": "nothing"})

    @router.get("/oracle/raise")
    async def raise_http(req: Request) -> None:
        raise HttpError(409, {"error": "conflict"})

    @router.get("/oracle/crash")
    def crash(req: Request) -> None:
        raise RuntimeError("a bug")

    # Sails 1.5 sends ok, badRequest and serverError through res.json: a string body
    # arrives as JSON text with a content-type, anything else as it is
    @router.get("/oracle/bad-text")
    async def bad_text(req: Request, res: Response) -> Response:
        return res.bad_request("unknown model")

    @router.get("/oracle/bad-object")
    async def bad_object(req: Request, res: Response) -> Response:
        return res.bad_request({"error": "unknown model"})

    @router.get("/oracle/bad-empty")
    async def bad_empty(req: Request, res: Response) -> Response:
        return res.bad_request()

    @router.get("/oracle/ok-text")
    async def ok_text(req: Request, res: Response) -> Response:
        return res.ok("fine")

    @router.get("/oracle/json-text")
    async def json_text(req: Request, res: Response) -> Response:
        return res.json("fine")

    @router.get("/oracle/created-text")
    async def created_text(req: Request, res: Response) -> Response:
        return res.created("made")

    @router.get("/oracle/fail-object")
    async def fail_object(req: Request, res: Response) -> Response:
        return res.server_error({"error": "boom"})

    @router.get("/oracle/fail-exception")
    async def fail_exception(req: Request, res: Response) -> Response:
        return res.server_error(RuntimeError("boom"))

    @router.get("/oracle/send-text")
    async def send_text(req: Request, res: Response) -> Response:
        return res.status(400).send("raw")

    await serve(router)
    client = await sails_client(gateway_factory())
    expected = {  # the jwr scenario of a real Sails 1.5 app, where it has the case
        "/oracle/headers": (201, {"created": "nothing"}, {"x-oracle": "yes"}),
        "/oracle/text": (200, "plain text", {}),
        "/oracle/empty": (200, "OK", {}),
        "/oracle/fail": (500, '"boom"', {"content-type": "application/json"}),
        "/oracle/forbidden": (403, "Forbidden", {}),
        "/no/such/route": (404, "Not Found", {}),
        "/oracle/raise": (409, {"error": "conflict"}, {}),
        "/oracle/crash": (500, "Internal Server Error", {}),
        "/oracle/bad-text": (400, '"unknown model"', JSON),
        "/oracle/bad-object": (400, {"error": "unknown model"}, {}),
        "/oracle/bad-empty": (400, "Bad Request", {}),
        "/oracle/ok-text": (200, '"fine"', JSON),
        "/oracle/json-text": (200, '"fine"', JSON),
        "/oracle/created-text": (201, '"made"', JSON),
        "/oracle/fail-object": (500, {"error": "boom"}, {}),
        "/oracle/fail-exception": (500, '"boom"', JSON),
        "/oracle/send-text": (400, "raw", {}),  # res.send: raw, as jwr.02
    }
    for url, (status, body, headers_) in expected.items():
        jwr = await request(client, "get", url)
        assert jwr == {"body": body, "headers": headers_, "statusCode": status}, url


async def test_parse_errors_as_sails(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    await serve(echo_router())
    gw = gateway_factory()
    client = await sails_client(gw)
    no_url = await client.client.call("get", {"method": "get", "data": {}}, timeout=WAIT_S)
    assert list(no_url) == [*PARSE_ERROR, "details"]  # Sails' key order, without `stack`
    assert {k: no_url[k] for k in PARSE_ERROR} == PARSE_ERROR
    assert no_url["details"].startswith("No url provided in request")
    bad_url = await client.client.call("post", {"url": 5}, timeout=WAIT_S)
    assert bad_url["details"].startswith("Invalid url provided")
    # without an ack, the error comes as the event sails:parseError
    await client.client.emit("get", {"method": "get"})
    await client.wait_for(lambda ev: any(e == "sails:parseError" for e, _ in ev))
    event = client.named("sails:parseError")[0]
    assert {k: event[k] for k in PARSE_ERROR} == PARSE_ERROR

    # SDK version rules: missing (taken as 0.9.0), older than 0.11.0, not semver
    for query in ("", "__sails_io_sdk_version=0.10.5", "__sails_io_sdk_version=1.2"):
        old = await sails_client(gw, query=query)
        answer = await request(old, "get", "/echo")
        assert list(answer) == [*PARSE_ERROR, "details"], query
        assert {k: answer[k] for k in PARSE_ERROR} == PARSE_ERROR, query
        assert "version" in answer["details"]
    fine = await sails_client(gw, query="__sails_io_sdk_version=0.11.0-rc.1")
    assert (await request(fine, "get", "/echo"))["statusCode"] == 200


async def test_populate_watches_every_associated_model(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve, publisher: Publisher
) -> None:
    """Sails' populate blueprint (`GET /user/1/pets`) runs subscribeDeep over *every*
    association of the model: the requester watches `pet` and `tag`, and is subscribed
    to the record and the children that were populated. `after_populate` with its
    default associations does the same; a tag created afterwards reaches it."""
    registry = ModelRegistry()
    registry.define(
        "user", {"pets": to_many("pet", via="owner"), "tags": to_many("tag", via="users")}
    )
    registry.define("pet", {"owner": to_one("user")})
    registry.define("tag", {"users": to_many("user", via="tags")})
    # what Waterline's findOne(1).populate("pets") gives: no `tags` key
    alice = {"id": 1, "name": "alice", "pets": [{"id": 2, "name": "rex", "owner": 1}]}
    router = Router()

    @router.get("/user/:id/pets")
    async def populate(req: Request, res: Response) -> Response:
        user = Model(req.pub, "user", registry=registry)
        await user.after_populate(alice, requester=req.socket_id)
        return res.ok(alice["pets"])

    await serve(router)
    client = await sails_client(gateway_factory())
    jwr = await request(client, "get", "/user/1/pets")
    assert jwr == {"body": alice["pets"], "headers": {}, "statusCode": 200}
    assert sorted(await publisher.sockets.rooms(client.sid)) == sorted(
        [
            client.sid,
            "sails_model_create_pet",
            "sails_model_create_tag",
            "sails_model_pet_2:pet",
            "sails_model_user_1:user",
        ]
    )
    tag = {"id": 3, "name": "green", "users": []}
    await Model(publisher, "tag", registry=registry).after_create(tag)
    await client.wait_for(lambda ev: any(e == "tag" for e, _ in ev))
    assert client.named("tag") == [{"verb": "created", "data": tag, "id": 3}]


async def test_no_worker_is_503_and_a_slow_worker_is_504(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    timeout_s = 2.0
    gw = gateway_factory(virtual_request_timeout_s=timeout_s)
    client = await sails_client(gw)
    started = time.monotonic()
    assert await request(client, "get", "/anything") == {
        "body": "Service Unavailable",
        "headers": {},
        "statusCode": 503,
    }
    # NATS says "no responders" at once: an answer well before the timeout (a busy
    # machine may take a few hundred ms; waiting out the timeout would take 2 s)
    assert time.monotonic() - started < timeout_s / 2

    router = Router()
    release = asyncio.Event()

    @router.get("/slow")
    async def slow(req: Request) -> str:
        await asyncio.wait_for(release.wait(), 10)
        return "late"

    await serve(router)
    started = time.monotonic()
    answer = await request(client, "get", "/slow")
    elapsed = time.monotonic() - started
    release.set()
    assert answer == {"body": "Gateway Timeout", "headers": {}, "statusCode": 504}
    assert timeout_s - 0.1 < elapsed < timeout_s + 3.0
    metrics = gw.metrics()
    assert metrics['sailcast_gateway_virtual_requests_total{status="5xx"}'] == 2
    assert metrics["sailcast_gateway_virtual_request_duration_seconds_count"] == 2


async def test_nats_down_answers_at_once_and_logs_its_errors_sparingly(
    gateway_factory: GatewayFactory, sails_client: Connect, prefix: str, tmp_path: Path
) -> None:
    """While NATS is away a request would wait out its whole timeout in nats-py's
    buffer: it is answered 503 at once, a before-connect check refuses at once,
    nats-py's error for every reconnect attempt (each 0.5 s) is one warning per kind,
    and SIGTERM still ends the gateway cleanly."""
    timeout_s = 5.0
    nats = EmbeddedNats().start()
    log = tmp_path / "gateway.log"
    try:
        router = echo_router()

        @router.before_connect
        async def allow(conn: ConnectCheck) -> bool:
            return True

        worker = await Publisher.connect(nats.url, prefix=prefix)
        service = await router.start(worker)
        gw = gateway_factory(
            nats_url=nats.url,
            stderr_file=log,
            log_format="json",
            log_level="DEBUG",
            before_connect="workers",
            before_connect_timeout_s=timeout_s,
            virtual_request_timeout_s=timeout_s,
        )
        client = await sails_client(gw)
        assert (await request(client, "get", "/echo"))["statusCode"] == 200
        await service.stop()
        await worker.close()

        nats.stop()
        deadline = time.monotonic() + 10
        while gw.metric("sailcast_gateway_nats_connected") != 0:
            assert time.monotonic() < deadline, "the gateway did not notice NATS was gone"
            await asyncio.sleep(0.05)
        started = time.monotonic()
        answer = await request(client, "get", "/echo")
        assert answer == {"body": "Service Unavailable", "headers": {}, "statusCode": 503}
        assert time.monotonic() - started < timeout_s / 2
        started = time.monotonic()
        error = await connect_error(sails_client(gw))
        assert "Unauthorized: the authorization check is unavailable" in error
        assert time.monotonic() - started < timeout_s / 2

        def nats_errors() -> list[dict[str, Any]]:
            lines = [json.loads(raw) for raw in log.read_bytes().splitlines()]
            return [ln for ln in lines if ln["logger"] == "gateway.broker.nats_broker"]

        while len(nats_errors()) < 6:  # the connection lost, then failed reconnects
            assert time.monotonic() < deadline + 10, nats_errors()
            await asyncio.sleep(0.1)
        warned = [ln["msg"] for ln in nats_errors() if ln["level"] == "WARNING"]
        assert len(warned) == len(set(warned)), warned  # each kind of error once
        assert len(warned) <= 2, warned

        gw.stop()  # shutting down while NATS is away is clean too
        assert gw.proc.returncode == 0, log.read_text()[-3000:]
    finally:
        nats.close()


async def test_a_join_in_a_handler_is_in_effect_before_the_answer_arrives(
    two_gateways: list[GatewayProcess],
    sails_client: Connect,
    serve: Serve,
    publisher: Publisher,
) -> None:
    router = Router()

    @router.post("/room/:name/join")
    async def join(req: Request) -> dict[str, str]:
        await req.pub.sockets.join(req.socket_id, req.params["name"])
        return {"joined": req.params["name"]}

    @router.post("/user/:id/subscribe")
    def subscribe(req: Request) -> dict[str, Any]:  # plain handler: req.run
        req.run(req.pub.model("user").subscribe(req.socket_id, [int(req.params["id"])]))
        return {"subscribed": int(req.params["id"])}

    await serve(router)
    client = await sails_client(two_gateways[1])  # the worker talks to gwb through NATS
    for i in range(10):
        assert (await request(client, "post", f"/room/r{i}/join"))["statusCode"] == 200
        # published the moment the answer is in: no wait, no retry
        await publisher.sockets.broadcast(f"r{i}", "chat", {"n": i})
        assert (await request(client, "post", f"/user/{i}/subscribe"))["statusCode"] == 200
        await publisher.model("user").publish([i], {"verb": "custom", "n": i})
    await quiet([client], publisher)
    assert client.named("chat") == [{"n": i} for i in range(10)]
    assert client.named("user") == [{"verb": "custom", "n": i} for i in range(10)]


async def test_several_workers_share_the_routes(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    services = []
    for name in ("w1", "w2", "w3"):
        router = Router()

        async def who(req: Request, _name: str = name) -> str:
            await asyncio.sleep(0.005)
            return _name

        router.add("GET /who", who)
        services.append(await serve(router))
    client = await sails_client(gateway_factory())
    answers = await asyncio.gather(*(request(client, "get", "/who") for _ in range(60)))
    assert [a["statusCode"] for a in answers] == [200] * 60, answers
    assert {a["body"] for a in answers} == {"w1", "w2", "w3"}
    assert sum(s.handled for s in services) == 60


async def test_after_disconnect_reaches_one_worker(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    gone: asyncio.Queue[Disconnected] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    routers = []
    for _ in range(2):  # two workers in the queue group: only one is told
        router = Router()

        @router.post("/join")
        async def join(req: Request) -> None:
            await req.join(["lobby", "side"])

        @router.after_disconnect
        def on_gone(event: Disconnected) -> None:  # a plain hook runs in a thread
            loop.call_soon_threadsafe(gone.put_nowait, event)

        routers.append(router)
        await serve(router)
    gw = gateway_factory()
    client = await sails_client(gw, query=SDK_QUERY + "&user=7")
    sid = client.sid
    assert (await request(client, "post", "/join"))["statusCode"] == 200
    await client.disconnect()
    notice = await asyncio.wait_for(gone.get(), WAIT_S)
    assert notice.socket_id == sid
    assert notice.gateway_id == gw.gateway_id
    assert notice.rooms == ("lobby", "side")
    assert notice.reason  # python-socketio's reason, e.g. "transport close"
    assert notice.handshake.query["user"] == "7"
    # a marker: nothing else arrives, and no second worker was told
    other = await sails_client(gw)
    await other.disconnect()
    assert (await asyncio.wait_for(gone.get(), WAIT_S)).socket_id != sid


# -- who may connect ----------------------------------------------------------------------------
async def connect_error(connect: Awaitable[Any]) -> str:
    """The message a refused client was given (its Socket.IO connect error)."""
    with pytest.raises(socketio.exceptions.ConnectionError) as info:
        await connect
    rc: RecordingClient = info.value.recording
    errors = [d.get("message") if isinstance(d, dict) else d for d in rc.named("connect_error")]
    return " | ".join(str(e) for e in errors) or str(info.value)


def token(claims: dict[str, Any], key: Any = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


async def test_jwt_hs256_accepts_good_tokens_and_says_why_it_refuses(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    await serve(echo_router())
    gw = gateway_factory(before_connect="jwt", jwt_secret=SECRET, jwt_audience="app")
    now = int(time.time())
    good = token({"sub": "u1", "aud": "app", "exp": now + 60})

    by_auth = await sails_client(gw, auth={"token": good})  # socket.io v4 auth payload
    assert (await request(by_auth, "get", "/echo"))["body"]["claims"]["sub"] == "u1"
    by_query = await sails_client(gw, query=f"{SDK_QUERY}&token={good}")  # io.sails.query
    assert (await request(by_query, "get", "/echo"))["statusCode"] == 200
    by_header = await sails_client(gw, headers={"Authorization": f"Bearer {good}"})
    assert by_header.client.connected

    refused = {
        "no token": (None, "Unauthorized: no token"),
        "expired": (token({"aud": "app", "exp": now - 60}), "Unauthorized: token expired"),
        "wrong key": (
            token({"aud": "app", "exp": now + 60}, key="another-secret-another-secret-00"),
            "Unauthorized: bad token signature",
        ),
        "audience": (
            token({"aud": "other", "exp": now + 60}),
            "Unauthorized: token audience not accepted",
        ),
        "garbage": ("not.a.jwt", "Unauthorized: malformed token"),
    }
    for case, (bad, message) in refused.items():
        auth = {"token": bad} if bad else None
        error = await connect_error(sails_client(gw, auth=auth))
        assert message in error, case
    metrics = gw.metrics()
    assert metrics['sailcast_gateway_connect_rejections_total{reason="unauthorized"}'] == 5


async def test_jwt_rs256_from_a_key_file(
    gateway_factory: GatewayFactory, sails_client: Connect, tmp_path: Path
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "jwt.pub.pem"
    key_file.write_bytes(public_pem)
    gw = gateway_factory(before_connect="jwt", jwt_public_key_file=key_file)
    exp = int(time.time()) + 60
    good = token({"sub": "u2", "exp": exp}, key=private, alg="RS256")
    assert (await sails_client(gw, auth={"token": good})).client.connected
    # the public key used as an HMAC secret (algorithm confusion) is refused
    forged = hs256_with_raw_key({"sub": "admin", "exp": exp}, public_pem)
    error = await connect_error(sails_client(gw, auth={"token": forged}))
    assert "Unauthorized: token algorithm 'HS256' is not RS256" in error


def hs256_with_raw_key(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 token signed with any bytes (PyJWT refuses a PEM key for HMAC)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


async def test_workers_decide_who_connects(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    gw = gateway_factory(before_connect="workers", before_connect_timeout_s=1)
    # nobody to ask: refused, clearly
    error = await connect_error(sails_client(gw, auth={"token": "good"}))
    assert "Unauthorized: the authorization check is unavailable" in error

    router = echo_router()

    @router.before_connect
    async def check(conn: ConnectCheck) -> Any:
        auth = conn.handshake.auth or {}
        if auth.get("token") == "good":
            return {"user": 42, "sid": conn.socket_id}
        if auth.get("token") == "deny-quietly":
            return False
        raise Reject("Unauthorized: unknown token")

    await serve(router)
    client = await sails_client(gw, auth={"token": "good"})
    assert (await request(client, "get", "/echo"))["body"]["claims"] == {
        "user": 42,
        "sid": client.sid,
    }
    assert "Unauthorized: unknown token" in await connect_error(
        sails_client(gw, auth={"token": "bad"})
    )
    assert "Unauthorized" in await connect_error(sails_client(gw, auth={"token": "deny-quietly"}))


async def test_only_allow_origins_is_an_exact_list(
    gateway_factory: GatewayFactory, sails_client: Connect, serve: Serve
) -> None:
    await serve(echo_router())
    gw = gateway_factory(only_allow_origins="http://good.example,https://app.example:8443")
    ok = await sails_client(gw, headers={"Origin": "http://good.example"})
    assert (await request(ok, "get", "/echo"))["body"]["headers"]["origin"] == (
        "http://good.example"
    )
    assert (await sails_client(gw, headers={"Origin": "https://app.example:8443"})).client.connected
    for origin in ("http://good.example/", "http://good.example:80", "https://good.example"):
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sails_client(gw, headers={"Origin": origin})  # refused at the handshake
    # no Origin at all (a script, a native app) is refused, as Sails 1.x does
    error = await connect_error(sails_client(gw))
    assert "Origin not allowed" in error
    # three refused by python-engineio at the handshake, one by the gateway's check
    assert gw.metric('sailcast_gateway_connect_rejections_total{reason="origin"}') == 4


async def test_a_refused_origin_is_counted_whatever_the_origin_setting(
    gateway_factory: GatewayFactory, sails_client: Connect
) -> None:
    """python-engineio refuses a foreign Origin at the HTTP handshake (400), before any
    socket exists; the refusal still shows in connect_rejections_total."""
    same_host = gateway_factory()  # no origin setting: the host the client asked for
    listed = gateway_factory(allowed_origins="http://good.example")
    assert (await sails_client(same_host, headers={"Origin": same_host.url})).client.connected
    assert (await sails_client(listed, headers={"Origin": "http://good.example"})).client.connected
    async with aiohttp.ClientSession() as http:
        for gw, good in ((same_host, same_host.url), (listed, "http://good.example")):
            with pytest.raises(socketio.exceptions.ConnectionError):
                await sails_client(gw, headers={"Origin": "http://evil.example"})
            handshake = f"{gw.url}/socket.io/?EIO=4&transport=polling&{SDK_QUERY}"
            async with http.get(handshake, headers={"Origin": "http://evil.example"}) as resp:
                assert resp.status == 400
                assert "not an accepted origin" in await resp.text()
                assert "Access-Control-Allow-Origin" not in resp.headers
            async with http.get(handshake, headers={"Origin": good}) as resp:
                assert resp.status == 200
                assert resp.headers["Access-Control-Allow-Origin"] == good  # CORS still works
            metric = 'sailcast_gateway_connect_rejections_total{reason="origin"}'
            assert gw.metric(metric) == 2, gw.gateway_id
