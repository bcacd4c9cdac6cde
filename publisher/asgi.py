"""Answer sails.io.js virtual requests with an existing ASGI application (FastAPI,
Starlette, Django's ASGI handler): the app's own routes, middleware and sessions serve
`io.socket.get(...)` as they serve HTTP, so no route is written twice.

    from publisher import Publisher
    from publisher.asgi import AsgiBridge
    from myapp.main import app          # a FastAPI app

    async with await Publisher.connect(nats_url) as pub:
        await AsgiBridge(app).serve(pub)   # or: sailcast worker --asgi myapp.main:app

Each virtual request becomes one ASGI HTTP request: the method, path and query string
of its `url`, its headers (the handshake's cookie and origin, as the gateway pins them,
so the app's cookie/session middleware sees the browser's session), the body encoded as
JSON with `content-type: application/json`, and `x-sailcast-socket-id`. The scope's
`state` (Starlette's `request.state`, Django's `request.scope["state"]`) carries
`sailcast`, a `SocketContext` whose `join` subscribes the requester to rooms. The app's
answer becomes the JWR: its status, its headers lower-cased (one value per name, the
first `set-cookie` kept so the gateway can adopt the session cookie), and its body
parsed as JSON when it says it is JSON, else as text. The queue group, concurrency and
graceful stop are the router's (`publisher.router.service`); the app's lifespan runs
around serving, and its lifespan state reaches every request as in an HTTP server.

Client events (`socket.emit("typing", data, ack)`) the bridge is told to answer
(`events=("typing",)`, or `"*"`) arrive as `POST /sailcast/events` (`events_path`)
with the JSON body `{"event": "typing", "args": [data]}` and the headers
`x-sailcast-event` and `x-sailcast-socket-id`; a 2xx answer's body is the ack.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from publisher.router.dispatch import DEFAULT_MAX_CONCURRENCY
from publisher.router.request import phrase
from publisher.router.service import DEFAULT_STOP_TIMEOUT_S, RouterService, serve_until_stopped
from shared.client_events import EventAnswer, SocketEvent, check_event_name
from shared.errors import MalformedEnvelope, UsageError
from shared.subjects import WORKER_QUEUE
from shared.vrequest import ConnectAnswer, Handshake, VirtualRequest, VirtualResponse

if TYPE_CHECKING:
    from publisher.client import Publisher
    from publisher.router.hooks import ConnectCheck, Connected, Disconnected

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SOCKET_ID_HEADER: Final = "x-sailcast-socket-id"
EVENT_HEADER: Final = "x-sailcast-event"
DEFAULT_EVENTS_PATH: Final = "/sailcast/events"
STATE_KEY: Final = "sailcast"
_BODYLESS: Final = ("get", "head", "delete", "options")


@dataclass(frozen=True, slots=True)
class SocketContext:
    """Who is asking, as a view sees it in `scope["state"]["sailcast"]`."""

    socket_id: str
    gateway_id: str
    request_id: str
    handshake: Handshake
    pub: Publisher

    async def join(self, rooms: str | list[str]) -> None:
        """Join the requesting socket to rooms; in effect on its gateway when this
        returns, so a broadcast after the answer reaches it."""
        await self.pub.sockets.join(self.socket_id, rooms)

    async def leave(self, rooms: str | list[str]) -> None:
        await self.pub.sockets.leave(self.socket_id, rooms)


def build_scope(vreq: VirtualRequest, state: dict[str, Any]) -> tuple[Scope, bytes]:
    """The ASGI HTTP scope and body for one virtual request."""
    parts = urllib.parse.urlsplit(vreq.url)
    raw_path = parts.path or "/"
    body = b""
    headers = {k.lower(): v for k, v in vreq.headers.items()}
    if not (vreq.method in _BODYLESS and vreq.body in (None, {})):
        body = orjson.dumps(vreq.body)
        headers["content-type"] = "application/json"
    headers["content-length"] = str(len(body))
    headers[SOCKET_ID_HEADER] = vreq.socket_id
    if "host" not in headers and "host" in vreq.handshake.headers:
        headers["host"] = vreq.handshake.headers["host"]  # the app's host checks see ours
    address = vreq.handshake.ip or vreq.handshake.address
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": vreq.method.upper(),
        "scheme": "http",
        "path": urllib.parse.unquote(raw_path),
        "raw_path": raw_path.encode("latin-1", "replace"),
        "query_string": parts.query.encode("latin-1", "replace"),
        "root_path": "",
        "headers": [
            (k.encode("latin-1", "replace"), v.encode("latin-1", "replace"))
            for k, v in headers.items()
        ],
        "client": (address, 0) if address else None,
        "server": None,
        "state": state,
    }
    return scope, body


def to_virtual(status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> VirtualResponse:
    """The app's HTTP answer as a JWR: JSON bodies parsed, others as text."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name == "content-length":
            continue  # the JWR carries the decoded body, not these bytes
        if name not in headers:
            headers[name] = value
        elif name != "set-cookie":
            headers[name] = f"{headers[name]}, {value}"
    content_type = headers.get("content-type", "")
    decoded: Any
    if not body:
        decoded = phrase(status) if status >= 400 else ""
    elif "json" in content_type:
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            decoded = body.decode("utf-8", "replace")
    else:
        decoded = body.decode("utf-8", "replace")
    return VirtualResponse(status, headers, decoded)


class AsgiBridge:
    """An ASGI application answering virtual requests; `serve(pub)` as `Router.serve`."""

    def __init__(
        self,
        app: AsgiApp,
        *,
        queue: str = WORKER_QUEUE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        lifespan: bool = True,
        events: tuple[str, ...] = (),
        events_path: str = DEFAULT_EVENTS_PATH,
    ) -> None:
        """`events`: the client events the app answers ("*": all of them), each as a
        POST to `events_path` with `{"event": name, "args": [...]}`."""
        for name in events:
            if name != "*":
                try:
                    check_event_name(name)
                except MalformedEnvelope as exc:
                    raise UsageError(f"cannot declare event {name!r}: {exc}") from None
        if not events_path.startswith("/"):
            raise UsageError(f"events_path must start with '/', got {events_path!r}")
        self.event_names = tuple(dict.fromkeys(events))
        self.events_path = events_path
        if not callable(app):
            raise UsageError(f"not an ASGI application: {app!r}")
        if max_concurrency < 1:
            raise UsageError("max_concurrency must be at least 1")
        self.app = app
        self.queue = queue
        self.max_concurrency = max_concurrency
        self.lifespan = Lifespan(app) if lifespan else None

    answers_requests: Final = True
    answers_connect: Final = False
    hears_disconnect: Final = False
    hears_connect: Final = False

    async def dispatch(self, vreq: VirtualRequest, pub: Publisher) -> VirtualResponse:
        """Call the app once; every outcome is a response, never an exception."""
        state = dict(self.lifespan.state) if self.lifespan is not None else {}
        state[STATE_KEY] = SocketContext(
            vreq.socket_id, vreq.gateway_id, vreq.request_id, vreq.handshake, pub
        )
        scope, body = build_scope(vreq, state)
        sent_body = False
        status: int | None = None
        raw_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect while we wait for the answer
            return {"type": "http.disconnect"}  # pragma: no cover - never reached

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                raw_headers.extend((bytes(k), bytes(v)) for k, v in message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("%s %s failed in the ASGI app", vreq.method.upper(), vreq.url)
            if status is None:
                return VirtualResponse(500, {}, phrase(500))
        if status is None:
            log.error("%s %s: the ASGI app sent no response", vreq.method.upper(), vreq.url)
            return VirtualResponse(500, {}, phrase(500))
        return to_virtual(status, raw_headers, b"".join(chunks))

    async def handle_event(self, ev: SocketEvent, pub: Publisher) -> EventAnswer:
        """A client event as `POST <events_path>`: a 2xx answer's body is the ack's
        argument (none for an empty body); any other status refuses it ("failed")."""
        if "*" not in self.event_names and ev.event not in self.event_names:
            return EventAnswer(error="undeclared", message=f"no handler for {ev.event!r}")
        headers = {
            name: ev.handshake.headers[name]
            for name in ("cookie", "origin", "user-agent")
            if name in ev.handshake.headers
        }
        headers[EVENT_HEADER] = ev.event
        vreq = VirtualRequest(
            method="post",
            url=self.events_path,
            headers=headers,
            body={"event": ev.event, "args": list(ev.args)},
            socket_id=ev.socket_id,
            gateway_id=ev.gateway_id,
            handshake=ev.handshake,
        )
        response = await self.dispatch(vreq, pub)
        if not 200 <= response.status < 300:
            return EventAnswer(error="failed", message=f"the app answered {response.status}")
        return EventAnswer(args=() if response.body == "" else (response.body,))

    async def check_connect(self, check: ConnectCheck) -> ConnectAnswer:
        return ConnectAnswer(True)  # never subscribed: answers_connect is False

    async def notify_disconnect(self, gone: Disconnected) -> None:
        return None

    async def notify_connect(self, came: Connected) -> None:
        return None

    async def start(self, pub: Publisher) -> AsgiService:
        """Run the app's lifespan startup, then join the workers' queue group."""
        if self.lifespan is not None:
            await self.lifespan.startup()
        service = AsgiService(self, pub)
        try:
            await service.start()
        except BaseException:
            if self.lifespan is not None:
                await self.lifespan.shutdown()
            raise
        return service

    async def serve(
        self,
        pub: Publisher,
        *,
        started: Callable[[], None] | None = None,
        handle_signals: bool = False,
    ) -> None:
        """Answer until cancelled (or SIGTERM/SIGINT with `handle_signals`), then leave
        the queue group, finish what was taken and run the app's lifespan shutdown."""
        service = await self.start(pub)
        await serve_until_stopped(service, started=started, handle_signals=handle_signals)


class AsgiService(RouterService):
    """The router's service for a bridge; stopping it also ends the app's lifespan."""

    bridge: AsgiBridge

    def __init__(self, bridge: AsgiBridge, pub: Publisher) -> None:
        super().__init__(bridge, pub)
        self.bridge = bridge

    async def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        await super().stop(timeout_s)
        if self.bridge.lifespan is not None:
            await self.bridge.lifespan.shutdown()


class Lifespan:
    """The ASGI lifespan protocol around serving; an app without it (Django's handler
    raises on a lifespan scope) is served without it."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.supported = True
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.ensure_future(self._run(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        answer = await self._outbox.get()
        if answer["type"] == "lifespan.startup.failed":
            raise UsageError(f"the ASGI app failed to start: {answer.get('message', '')}")

    async def _run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self._inbox.get, self._outbox.put)
        except Exception as exc:
            self.supported = False
            log.info("the ASGI app does not run a lifespan (%s): served without one", exc)
        finally:
            await self._outbox.put({"type": "lifespan.unsupported"})

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        answer = await self._outbox.get()
        if answer["type"] == "lifespan.shutdown.failed":
            log.error("the ASGI app failed to shut down: %s", answer.get("message", ""))
        await asyncio.wait([self._task], timeout=DEFAULT_STOP_TIMEOUT_S)
