"""The ASGI bridge's translation (publisher/asgi.py), without NATS: a virtual request
to an ASGI HTTP scope, the app's answer to a JWR, and the lifespan around serving."""

from __future__ import annotations

from typing import Any

import pytest

from publisher.asgi import AsgiBridge, Lifespan, build_scope, to_virtual
from shared.errors import UsageError
from shared.vrequest import Handshake, VirtualRequest


def vreq(method: str = "get", url: str = "/a%20b/c?x=1&y=2", body: Any = None) -> VirtualRequest:
    return VirtualRequest(
        method=method,
        url=url,
        headers={"Cookie": "sid=1", "x-socket-id-forged": "no", "x-sailcast-socket-id": "forged"},
        body={} if body is None else body,
        socket_id="S1",
        gateway_id="gw1",
        handshake=Handshake(headers={"host": "gw.example"}, address="10.0.0.7", ip="203.0.113.9"),
        request_id="gw1-1",
    )


def test_a_get_becomes_a_bodyless_http_scope() -> None:
    scope, body = build_scope(vreq(), {"k": 1})
    headers = dict(scope["headers"])
    assert (scope["type"], scope["method"], scope["path"]) == ("http", "GET", "/a b/c")
    assert (scope["raw_path"], scope["query_string"]) == (b"/a%20b/c", b"x=1&y=2")
    assert body == b""
    assert b"content-type" not in headers
    assert headers[b"content-length"] == b"0"
    assert headers[b"cookie"] == b"sid=1"
    assert headers[b"x-sailcast-socket-id"] == b"S1"  # the client cannot forge it
    assert headers[b"host"] == b"gw.example"  # the handshake's, the client sent none
    assert scope["client"] == ("203.0.113.9", 0)
    assert scope["state"] == {"k": 1}


def test_a_post_carries_its_body_as_json() -> None:
    scope, body = build_scope(vreq("post", "/x", [1, {"a": None}]), {})
    headers = dict(scope["headers"])
    assert body == b'[1,{"a":null}]'
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()


@pytest.mark.parametrize(
    ("content_type", "raw", "expected"),
    [
        (b"application/json", b'{"a":1}', {"a": 1}),
        (b"application/problem+json", b"[1]", [1]),
        (b"application/json", b"not json", "not json"),
        (b"text/html; charset=utf-8", b"<p>hi</p>", "<p>hi</p>"),
    ],
)
def test_answers_become_jwr_bodies(content_type: bytes, raw: bytes, expected: Any) -> None:
    answer = to_virtual(200, [(b"Content-Type", content_type)], raw)
    assert answer.body == expected
    assert answer.headers == {"content-type": content_type.decode()}


def test_answer_headers_follow_the_jwr_rules() -> None:
    answer = to_virtual(
        404,
        [
            (b"Content-Length", b"0"),
            (b"Set-Cookie", b"a=1; Path=/"),
            (b"Set-Cookie", b"b=2"),
            (b"Vary", b"Origin"),
            (b"Vary", b"Cookie"),
        ],
        b"",
    )
    assert answer.status == 404
    assert answer.headers == {"set-cookie": "a=1; Path=/", "vary": "Origin, Cookie"}
    assert answer.body == "Not Found"  # an empty error body: the status phrase
    assert to_virtual(204, [], b"").body == ""


async def test_lifespan_state_reaches_requests_and_shutdown_runs() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = "ready"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["state"]["db"].encode()})

    bridge = AsgiBridge(app)
    assert bridge.lifespan is not None
    await bridge.lifespan.startup()
    answer = await bridge.dispatch(vreq(), pub=None)  # type: ignore[arg-type]
    assert (answer.status, answer.body) == (200, "ready")
    await bridge.lifespan.shutdown()
    assert events == ["lifespan.startup", "lifespan.shutdown"]


async def test_an_app_without_lifespan_is_served_and_a_failed_startup_stops() -> None:
    async def no_lifespan(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")

    lifespan = Lifespan(no_lifespan)
    await lifespan.startup()
    assert not lifespan.supported
    await lifespan.shutdown()

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(UsageError, match="no database"):
        await Lifespan(failing).startup()


def test_bridge_arguments_are_checked() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(UsageError):
        AsgiBridge(app, events=("connect",))
    with pytest.raises(UsageError):
        AsgiBridge(app, events_path="events")
    with pytest.raises(UsageError):
        AsgiBridge(app, max_concurrency=0)
    assert AsgiBridge(app, events=("typing", "*", "typing")).event_names == ("typing", "*")
