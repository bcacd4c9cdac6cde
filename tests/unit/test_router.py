"""publisher.router without NATS, the gateway's virtual-request rules, and the wire codec
of virtual requests and hooks (shared/vrequest.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from gateway.auth import (
    ConnectRejected,
    JwtVerifier,
    handshake_from_request,
    token_from,
)
from gateway.engine import HandshakeRequest
from gateway.settings import check_origins, from_argv
from gateway.vrequests import (
    request_body,
    request_headers,
    response_headers,
    sdk_version_problem,
)
from publisher.router import (
    ConnectCheck,
    HttpError,
    Reject,
    Request,
    Response,
    Router,
    compile_pattern,
)
from shared.errors import ConfigError, MalformedEnvelope, UsageError
from shared.vrequest import (
    ConnectAnswer,
    DisconnectNotice,
    Handshake,
    VirtualRequest,
    VirtualResponse,
    decode_connect_answer,
    decode_connect_question,
    decode_disconnect,
    decode_vrequest,
    decode_vresponse,
    encode_connect_answer,
    encode_connect_question,
    encode_disconnect,
    encode_vrequest,
    encode_vresponse,
)

HS = Handshake(
    headers={"origin": "http://a.example", "cookie": "sid=1"},
    query={"__sails_io_sdk_version": "1.2.1"},
    address="10.0.0.7",
)


def vreq(method: str, url: str, body: Any = None) -> VirtualRequest:
    return VirtualRequest(method, url, {}, body if body is not None else {}, "s1", "gw0", HS)


def dispatch(router: Router, method: str, url: str, body: Any = None) -> VirtualResponse:
    return asyncio.run(router.dispatch(vreq(method, url, body), pub=None))  # type: ignore[arg-type]


# -- routes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "path", "params"),
    [
        ("/user/:id", "/user/5", {"id": "5"}),
        ("/user/:id", "/USER/5/", {"id": "5"}),
        ("/user/:id", "/user/a%20b", {"id": "a b"}),
        ("/user/:id", "/user", None),
        ("/user/:id", "/user/5/pets", None),
        ("/user/:id?", "/user", {}),
        ("/user/:id?", "/user/9", {"id": "9"}),
        ("/user/:id/pets/:pet", "/user/1/pets/2", {"id": "1", "pet": "2"}),
        ("/files/*", "/files/a/b.txt", {"0": "a/b.txt"}),
        ("/files/*", "/files", {}),
        ("/", "/", {}),
        ("/a.b", "/aXb", None),
    ],
)
def test_route_patterns(pattern: str, path: str, params: dict[str, str] | None) -> None:
    router = Router()
    router.add(f"GET {pattern}", lambda req: None)
    found = router.match("get", path)
    assert (found[1] if found else None) == params


@pytest.mark.parametrize("bad", ["user/:id", "/a/*/b", "/:a?/b", "/x/:1bad"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        compile_pattern(bad)


def test_first_match_wins_methods_and_head_falls_back_to_get() -> None:
    router = Router()
    router.add("GET /user/me", lambda req: "me")
    router.add("GET /user/:id", lambda req: f"user {req.params['id']}")
    router.add("/any", lambda req: req.method)  # no method: every method
    router.add("post /user", lambda req: "created")
    assert dispatch(router, "get", "/user/me").body == "me"
    assert dispatch(router, "get", "/user/3").body == "user 3"
    assert dispatch(router, "head", "/user/3").body == "user 3"
    assert dispatch(router, "delete", "/any").body == "DELETE"
    assert dispatch(router, "post", "/user").body == "created"
    assert dispatch(router, "put", "/user").status == 404  # Sails: no route, 404


def test_handlers_answer_every_way() -> None:
    router = Router()

    @router.get("/ret")
    async def ret(req: Request) -> Any:
        return {"a": 1}

    @router.get("/res")
    def res_(req: Request, res: Response) -> Response:
        return res.status(202).set({"X-A": "1"}).json([1])

    @router.get("/status-only")
    async def status_only(req: Request, res: Response) -> None:
        res.status(204)

    @router.get("/http")
    async def http(req: Request) -> None:
        raise HttpError(418, headers={"x-tea": "yes"})

    @router.get("/boom")
    async def boom(req: Request) -> None:
        raise ValueError("bug")

    @router.get("/twice")
    async def twice(req: Request, res: Response) -> None:
        res.ok(1)
        res.ok(2)

    assert dispatch(router, "get", "/ret") == VirtualResponse(200, {}, {"a": 1})
    assert dispatch(router, "get", "/res") == VirtualResponse(202, {"x-a": "1"}, [1])
    assert dispatch(router, "get", "/status-only") == VirtualResponse(204, {}, "No Content")
    assert dispatch(router, "get", "/http") == VirtualResponse(
        418, {"x-tea": "yes"}, "I'm a Teapot"
    )
    assert dispatch(router, "get", "/boom") == VirtualResponse(500, {}, "Internal Server Error")
    assert dispatch(router, "get", "/twice").status == 500  # answering twice is a bug


def test_request_object() -> None:
    seen: dict[str, Any] = {}
    router = Router()

    @router.post("/echo/:id")
    def echo(req: Request) -> None:
        seen.update(
            method=req.method,
            path=req.path,
            query=req.query,
            all=req.all_params(),
            param=req.param("id"),
            ip=req.ip,
            origin=req.header("Origin"),
            socket=req.socket_id,
        )

    request = VirtualRequest(
        "post", "/echo/3?a=1&a=2&b=", {"origin": "http://a.example"}, {"b": 2}, "s1", "gw0", HS
    )
    asyncio.run(router.dispatch(request, pub=None))  # type: ignore[arg-type]
    assert seen == {
        "method": "POST",
        "path": "/echo/3",
        "query": {"a": ["1", "2"], "b": ""},
        "all": {"a": ["1", "2"], "b": 2, "id": "3"},
        "param": "3",
        "ip": "10.0.0.7",
        "origin": "http://a.example",
        "socket": "s1",
    }


def test_handler_signatures_are_checked() -> None:
    router = Router()
    with pytest.raises(UsageError, match="take"):
        router.add("GET /x", lambda: None)
    with pytest.raises(UsageError, match="method"):
        router.add("FETCH /x", lambda req: None)


def test_before_connect_outcomes() -> None:
    def check(result: Any) -> ConnectAnswer:
        router = Router()

        @router.before_connect
        def decide(conn: ConnectCheck) -> Any:
            if isinstance(result, Exception):
                raise result
            return result

        conn = ConnectCheck("s1", "gw0", HS, pub=None)  # type: ignore[arg-type]
        return asyncio.run(router.check_connect(conn))

    assert check(True) == ConnectAnswer(True, None)
    assert check({"user": 1}) == ConnectAnswer(True, {"user": 1})
    assert check(False) == ConnectAnswer(False, message="Unauthorized")
    assert check(None) == ConnectAnswer(False, message="Unauthorized")  # forgot to return
    assert check(Reject("nope")) == ConnectAnswer(False, message="nope")
    assert not check(RuntimeError("bug")).allow


# -- the gateway's rules --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "ok"),
    [
        (None, False),  # missing: Sails assumes 0.9.0
        ("0.10.9", False),
        ("0.11.0", True),
        ("0.11.0-rc.3", True),  # Sails drops the prerelease part
        ("1.2.1", True),
        ("v1.2.1", True),
        ("1.2", False),  # not semver
        ("banana", False),
    ],
)
def test_sdk_version_rule(version: str | None, ok: bool) -> None:
    query = {"__sails_io_sdk_version": version} if version else {}
    assert (sdk_version_problem(Handshake(query=query)) is None) is ok


def test_request_headers_pin_origin_and_prefer_handshake_cookie() -> None:
    client = {"Origin": "http://evil", "COOKIE": "x=1", "X-N": 5, "x-obj": {"a": 1}}
    assert request_headers(client, HS) == {
        "origin": "http://a.example",
        "cookie": "sid=1",
        "x-n": "5",
    }
    assert request_headers({"origin": "http://evil"}, Handshake()) == {}  # no origin at all


def test_request_body_and_response_headers() -> None:
    assert request_body({"data": [1, 2]}) == [1, 2]
    assert request_body({"params": {"a": 1, "b": 1}, "data": {"a": 2}}) == {"a": 2, "b": 1}
    assert request_body({}) == {}
    headers, cookie = response_headers(
        {"X-A": "1", "Set-Cookie": ["sid=abc; Path=/; HttpOnly", "other=1"]}
    )
    assert (headers, cookie) == ({"x-a": "1"}, "sid=abc")


def test_handshake_from_request() -> None:
    request = HandshakeRequest(
        path="/socket.io/",
        query="__sails_io_sdk_version=1.2.1&token=t&EIO=4",
        headers={"origin": "http://a.example", "x-forwarded-for": "1.2.3.4"},
        remote="127.0.0.1",
    )
    hs = handshake_from_request(request, {"token": "from-auth"})
    assert hs.headers == {"origin": "http://a.example", "x-forwarded-for": "1.2.3.4"}
    assert hs.query["token"] == "t"
    assert hs.address == "127.0.0.1"
    assert token_from(hs) == "from-auth"  # the v4 auth payload first
    assert token_from(Handshake(query={"token": "q"})) == "q"
    assert token_from(Handshake(headers={"authorization": "Bearer  h "})) == "h"
    assert token_from(Handshake(headers={"authorization": "Basic xyz"})) is None


def test_jwt_verifier_needs_a_key_and_names_the_algorithm() -> None:
    with pytest.raises(ConfigError):
        JwtVerifier()
    with pytest.raises(ConfigError, match="SAILCAST_JWT_PUBLIC_KEY_FILE"):
        JwtVerifier(public_key_pem="not a key")


def test_jwt_audience_is_checked_only_when_configured() -> None:
    import jwt

    key = "unit-test-hs256-key-0123456789abcdef"
    token = jwt.encode({"sub": "u", "aud": "some-api", "exp": time.time() + 60}, key)
    assert JwtVerifier(secret=key).verify(token)["sub"] == "u"
    assert JwtVerifier(secret=key, audience="some-api").verify(token)["aud"] == "some-api"
    with pytest.raises(ConnectRejected, match="audience not accepted"):
        JwtVerifier(secret=key, audience="other").verify(token)


@pytest.mark.parametrize(
    "bad", ["http://x.example/", "https://x.example:443", "http://x.example:80", "x.example"]
)
def test_origin_list_follows_sails_rules(bad: str) -> None:
    with pytest.raises(ConfigError, match="SAILCAST_ONLY_ALLOW_ORIGINS"):
        check_origins([bad])
    assert check_origins(["file://", "http://localhost:3000"]) == (
        "file://",
        "http://localhost:3000",
    )


def test_settings_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="SAILCAST_ONLY_ALLOW_ORIGINS"):
        from_argv([], {"SAILCAST_ONLY_ALLOW_ORIGINS": "http://x/path"})
    with pytest.raises(ConfigError, match="SAILCAST_JWT_SECRET"):
        from_argv([], {"SAILCAST_BEFORE_CONNECT": "jwt"})
    with pytest.raises(ConfigError, match="SAILCAST_BEFORE_CONNECT"):
        from_argv([], {"SAILCAST_BEFORE_CONNECT": "maybe"})
    settings, _ = from_argv(
        ["--only-allow-origins", "http://a.example, file://", "--jwt-secret", "s3cret"],
        {"SAILCAST_VIRTUAL_REQUEST_TIMEOUT_S": "2.5"},
    )
    assert settings.connect.only_allow_origins == ("http://a.example", "file://")
    assert settings.vrequests.virtual_request_timeout_s == 2.5
    assert settings.describe()["jwt_secret"] == "***"


# -- the wire -----------------------------------------------------------------------------------
def test_wire_round_trips() -> None:
    request = VirtualRequest("patch", "/a?b=1", {"x": "1"}, [1, {"c": None}], "s1", "gw0", HS)
    assert decode_vrequest(encode_vrequest(request)) == request
    traced = replace(request, request_id="gw0-1f")  # beside the headers, not among them
    assert decode_vrequest(encode_vrequest(traced)) == traced
    assert decode_vrequest(encode_vrequest(traced)).headers == {"x": "1"}
    response = VirtualResponse(201, {"x-a": "1"}, {"ok": True})
    assert decode_vresponse(encode_vresponse(response)) == response
    assert decode_connect_question(encode_connect_question("s1", "gw0", HS)) == ("s1", "gw0", HS)
    for answer in (ConnectAnswer(True, {"u": 1}), ConnectAnswer(False, message="no")):
        assert decode_connect_answer(encode_connect_answer(answer)) == answer
    notice = DisconnectNotice("s1", "gw0", "transport close", ("a", "b"), HS)
    assert decode_disconnect(encode_disconnect(notice)) == notice


@pytest.mark.parametrize(
    "body",
    [
        b'{"ok":true,"statusCode":"200","headers":{},"body":1}',
        b'{"ok":true,"statusCode":99,"headers":{},"body":1}',
        b'{"ok":true,"statusCode":200,"headers":[],"body":1}',
        b'{"ok":false,"error":"bad_request"}',
        b"not json",
    ],
)
def test_bad_worker_answers_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedEnvelope):
        decode_vresponse(body)
