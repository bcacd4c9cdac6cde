"""Answer virtual requests in workers: a small router for sails.io.js requests.

A browser's `io.socket.get('/todo/7', cb)` reaches a gateway, which forwards it over
NATS to the workers' queue group; one worker runs the matching handler and its answer
becomes the client's JWR `{body, headers, statusCode}` (gateway/vrequests.py).

    from publisher import Publisher
    from publisher.router import Router

    router = Router()

    @router.get("/todo/:id")
    async def find_one(req, res):
        todo = await db.get(req.params["id"])
        if todo is None:
            return res.not_found()
        await req.pub.model("todo").subscribe(req.socket_id, [todo["id"]])
        return todo                      # 200, body = todo

    @router.post("/todo")
    def create(req, res):                # a plain function runs in a worker thread
        todo = db.insert(req.body)
        req.run(req.pub.model("todo").publish_create(todo, omit=req.socket_id))
        return res.status(201).json(todo)

    async with await Publisher.connect(nats_url) as pub:
        await router.serve(pub)          # until cancelled; then finishes what it holds

Routes are Sails route addresses: `/user/:id`, an optional last parameter
`/user/:id?`, a splat `/files/*` (`req.params["0"]`); matching ignores case and a
trailing slash; the first route registered that matches wins; an unknown path is 404
`"Not Found"`, like an unknown Sails route. A HEAD request without a HEAD route uses
the GET route. A handler takes `(req)` or `(req, res)`; it answers through `res`
(`res.ok(data)`, `res.status(201).json(data)`, `res.not_found()`, `res.set(name,
value)`), or returns the body (200), or raises `HttpError(status, body)`; any other
exception is a 500 `"Internal Server Error"` (logged). A handler that neither answers
nor returns anything answers 200 `"OK"`.

Joins before answers: `await pub.sockets.join(req.socket_id, room)` and the model
verbs return once the socket's gateway applied them, so a handler that subscribes
before it returns guarantees the subscription is in effect when the client reads the
answer — a broadcast published after the answer reaches the socket.

Several processes can serve the same router: they share `<p>.vreq` through a NATS queue
group, each request goes to one of them, and `serve` stops by leaving the group and
finishing the requests it holds, so workers can come and go without a request lost.

`before_connect` / `after_disconnect` register the connection hooks the gateway calls
when started with `--before-connect workers` (gateway/auth.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import signal
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared.envelope import encode_reply
from shared.errors import MalformedEnvelope, NotSerializable, UsageError
from shared.subjects import WORKER_QUEUE
from shared.vrequest import (
    METHODS,
    ConnectAnswer,
    DisconnectNotice,
    Handshake,
    VirtualRequest,
    VirtualResponse,
    decode_connect_question,
    decode_disconnect,
    decode_vrequest,
    encode_connect_answer,
    encode_vresponse,
)

if TYPE_CHECKING:
    from publisher.client import Publisher

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[..., Any]
DEFAULT_MAX_CONCURRENCY: Final = 256
"""Requests one worker process runs at once; more wait in its NATS subscription."""
DEFAULT_STOP_TIMEOUT_S: Final = 10.0
SYNC_RUN_TIMEOUT_S: Final = 30.0
_PARAM: Final = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)(\??)")
_ANY_METHOD: Final = "all"


class HttpError(Exception):
    """Raise from a handler to answer with this status (body defaults to its phrase)."""

    def __init__(
        self, status: int, body: Any = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {body if body is not None else _phrase(status)}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class Reject(Exception):
    """Raise from a `before_connect` hook to refuse a socket; the client sees `message`."""

    def __init__(self, message: str = "Unauthorized") -> None:
        super().__init__(message)
        self.message = message


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)


# -- the request ----------------------------------------------------------------------------
class Request:
    """What a handler sees: Sails' `req` for a socket request (`req.isSocket`)."""

    is_socket: Final = True

    def __init__(self, vreq: VirtualRequest, params: dict[str, str], pub: Publisher) -> None:
        parts = urllib.parse.urlsplit(vreq.url)
        self.method = vreq.method.upper()
        """Upper-case, as Sails' `req.method` (`GET`)."""
        self.url = vreq.url
        self.path = parts.path or "/"
        self.query = _parse_query(parts.query)
        """One string per name; a repeated name gives a list."""
        self.params = params
        """Path parameters of the matched route, URL-decoded."""
        self.body = vreq.body
        """`data` from the client: an object (dict), or the array it sent."""
        self.headers = dict(vreq.headers)
        """Lower-case names; `origin` and `cookie` are the handshake's."""
        self.socket_id = vreq.socket_id
        self.gateway_id = vreq.gateway_id
        self.handshake: Handshake = vreq.handshake
        self.pub = pub
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url} from {self.socket_id}>"

    @property
    def ip(self) -> str:
        """The client's address: behind trusted proxies (the gateway's --trust-proxy)
        taken from X-Forwarded-For, else the socket's peer."""
        return self.handshake.ip or self.handshake.address

    @property
    def ips(self) -> list[str]:
        """The forwarded chain, farthest first, as far as proxies are trusted (Express'
        req.ips); empty when none is."""
        return list(self.handshake.ips)

    @property
    def claims(self) -> Any:
        """What the gateway's before-connect check granted this socket (JWT claims, or a
        worker's `before_connect` answer); None when no check runs."""
        return self.handshake.claims

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def all_params(self) -> dict[str, Any]:
        """Sails' `req.allParams()`: path parameters over body over query string."""
        out: dict[str, Any] = dict(self.query)
        if isinstance(self.body, dict):
            out.update(self.body)
        elif isinstance(self.body, list):
            out.update({str(i): v for i, v in enumerate(self.body)})
        out.update(self.params)
        return out

    def param(self, name: str, default: Any = None) -> Any:
        """Sails' `req.param(name)`: a path parameter, else the body, else the query."""
        return self.all_params().get(name, default)

    async def join(self, rooms: str | list[str]) -> None:
        """Join this socket to rooms; in effect on its gateway when this returns."""
        await self.pub.sockets.join(self.socket_id, rooms)

    async def leave(self, rooms: str | list[str]) -> None:
        await self.pub.sockets.leave(self.socket_id, rooms)

    def run(self, awaitable: Coroutine[Any, Any, T], timeout: float = SYNC_RUN_TIMEOUT_S) -> T:
        """From a plain (sync) handler, which runs in a worker thread: run a coroutine of
        the publisher on the worker's event loop and wait for its result."""
        if self._loop is None:
            awaitable.close()
            raise UsageError("req.run() is for plain handlers; an async handler awaits")
        return asyncio.run_coroutine_threadsafe(awaitable, self._loop).result(timeout)


def _parse_query(query: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name in out:
            prev = out[name]
            out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[name] = value
    return out


# -- the response helper ----------------------------------------------------------------------
class Response:
    """Sails' `res` for a socket request: set status and headers, then answer once."""

    def __init__(self) -> None:
        self.status_code = 200
        self.headers: dict[str, str] = {}
        self.body: Any = None
        self.sent = False

    def status(self, code: int) -> Response:
        if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 999:
            raise UsageError(f"status must be an integer 100-999, got {code!r}")
        self.status_code = code
        return self

    def set(self, name: str | Mapping[str, str], value: str | None = None) -> Response:
        """`res.set("x-thing", "1")` or `res.set({...})`; names are lower-cased."""
        items = name.items() if isinstance(name, Mapping) else [(name, value)]
        for key, val in items:
            if not isinstance(key, str) or not isinstance(val, str):
                raise UsageError(f"header {key!r} must have a string value, got {val!r}")
            self.headers[key.lower()] = val
        return self

    def send(self, body: Any = None) -> Response:
        """Answer with `body`; none gives the status phrase (`"OK"`), as Sails does."""
        if self.sent:
            raise UsageError("this request was already answered")
        self.body = _phrase(self.status_code) if body is None else body
        self.sent = True
        return self

    json = send

    def send_status(self, code: int) -> Response:
        return self.status(code).send()

    def ok(self, body: Any = None) -> Response:
        return self.status(200).send(body)

    def created(self, body: Any = None) -> Response:
        return self.status(201).send(body)

    def bad_request(self, body: Any = None) -> Response:
        return self.status(400).send(body)

    def forbidden(self, body: Any = None) -> Response:
        return self.status(403).send(body)

    def not_found(self, body: Any = None) -> Response:
        return self.status(404).send(body)

    def server_error(self, body: Any = None) -> Response:
        """500. With a body, what Sails 1.5 answers: the body as JSON *text* and a
        `content-type: application/json` header (recorded: `"\\"boom\\""`)."""
        if body is None:
            return self.status(500).send()
        self.set("content-type", "application/json")
        try:
            text = orjson.dumps(body).decode()
        except TypeError:
            text = orjson.dumps(str(body)).decode()
        return self.status(500).send(text)

    def as_virtual(self) -> VirtualResponse:
        return VirtualResponse(status=self.status_code, headers=self.headers, body=self.body)


# -- connection hooks ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConnectCheck:
    """What a `before_connect` hook decides on: the socket's handshake."""

    socket_id: str
    gateway_id: str
    handshake: Handshake
    pub: Publisher


@dataclass(frozen=True, slots=True)
class Disconnected:
    """What an `after_disconnect` hook is told: who went, why, and from which rooms."""

    socket_id: str
    gateway_id: str
    reason: str
    rooms: tuple[str, ...]
    handshake: Handshake
    pub: Publisher


# -- routes -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: Handler
    wants_res: bool
    is_async: bool


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A Sails route address as a regex: `:name`, a last `:name?`, `*` (group `_0`)."""
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise UsageError(f"a route pattern must start with '/', got {pattern!r}")
    segments = [s for s in pattern.split("/") if s]
    out = []
    for i, seg in enumerate(segments):
        if seg == "*":
            if i != len(segments) - 1:
                raise UsageError(f"'*' must be the last segment in {pattern!r}")
            out.append("(?:/(?P<_0>.*))?")
            continue
        match = _PARAM.fullmatch(seg)
        if match is None:
            if ":" in seg:
                raise UsageError(f"bad parameter segment {seg!r} in {pattern!r}")
            out.append("/" + re.escape(seg))
            continue
        name, optional = match.groups()
        if optional and i != len(segments) - 1:
            raise UsageError(f"only the last parameter may be optional in {pattern!r}")
        out.append(f"(?:/(?P<{name}>[^/]+)){'?' if optional else ''}")
    return re.compile("".join(out) + "/?", re.IGNORECASE)


def _arity(handler: Handler, what: str) -> int:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}: cannot inspect handler {handler!r}") from exc
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 2
    return len(positional)


def _is_async(handler: Handler) -> bool:
    return inspect.iscoroutinefunction(handler)


class Router:
    """Routes and hooks of one application; `serve(pub)` answers them over NATS."""

    def __init__(
        self,
        *,
        queue: str = WORKER_QUEUE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        if max_concurrency < 1:
            raise UsageError("max_concurrency must be at least 1")
        self.queue = queue
        self.max_concurrency = max_concurrency
        self.routes: list[Route] = []
        self._before_connect: Handler | None = None
        self._after_disconnect: Handler | None = None

    # -- registration ------------------------------------------------------------------------
    def add(self, address: str, handler: Handler, *, method: str | None = None) -> Route:
        """`add("GET /user/:id", fn)`, or `add("/user/:id", fn, method="get")`; a
        pattern without a method answers every method."""
        if method is None:
            verb, sep, pattern = address.strip().partition(" ")
            if not sep:
                verb, pattern = _ANY_METHOD, verb
        else:
            verb, pattern = method, address
        verb = verb.lower()
        if verb not in (*METHODS, _ANY_METHOD):
            raise UsageError(f"unknown method {verb!r} for route {address!r}")
        if not callable(handler):
            raise UsageError(f"handler for {address!r} is not callable")
        arity = _arity(handler, address)
        if arity not in (1, 2):
            raise UsageError(f"handler for {address!r} must take (req) or (req, res)")
        route = Route(
            method=verb,
            pattern=pattern.strip(),
            regex=compile_pattern(pattern.strip()),
            handler=handler,
            wants_res=arity == 2,
            is_async=_is_async(handler),
        )
        self.routes.append(route)
        return route

    def route(self, address: str) -> Callable[[Handler], Handler]:
        """Decorator form of `add`: `@router.route("PATCH /user/:id")`."""

        def register(handler: Handler) -> Handler:
            self.add(address, handler)
            return handler

        return register

    def _verb(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(pattern, handler, method=method)
            return handler

        return register

    def get(self, pattern: str) -> Callable[[Handler], Handler]:
        return self._verb("get", pattern)

    def post(self, pattern: str) -> Callable[[Handler], Handler]:
        return self._verb("post", pattern)

    def put(self, pattern: str) -> Callable[[Handler], Handler]:
        return self._verb("put", pattern)

    def patch(self, pattern: str) -> Callable[[Handler], Handler]:
        return self._verb("patch", pattern)

    def delete(self, pattern: str) -> Callable[[Handler], Handler]:
        return self._verb("delete", pattern)

    def options(self, pattern: str) -> Callable[[Handler], Handler]:
        return self._verb("options", pattern)

    def head(self, pattern: str) -> Callable[[Handler], Handler]:
        return self._verb("head", pattern)

    def all(self, pattern: str) -> Callable[[Handler], Handler]:
        return self._verb(_ANY_METHOD, pattern)

    def before_connect(self, handler: Handler) -> Handler:
        """`handler(check: ConnectCheck)`, sync or async. Return True (or data to hand to
        every request of the socket as `req.claims`) to accept; False, None or
        `raise Reject("why")` to refuse."""
        _arity(handler, "before_connect")
        self._before_connect = handler
        return handler

    def after_disconnect(self, handler: Handler) -> Handler:
        """`handler(gone: Disconnected)`, sync or async: a socket has disconnected."""
        _arity(handler, "after_disconnect")
        self._after_disconnect = handler
        return handler

    # -- dispatch (no NATS: usable in unit tests) --------------------------------------------
    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The first route for this method (or any method) matching the path, and its
        URL-decoded parameters; HEAD falls back to the GET routes."""
        method = method.lower()
        for route in self.routes:
            if route.method not in (method, _ANY_METHOD):
                continue
            found = route.regex.fullmatch(path)
            if found is not None:
                params = {
                    ("0" if k == "_0" else k): urllib.parse.unquote(v)
                    for k, v in found.groupdict().items()
                    if v is not None
                }
                return route, params
        if method == "head":
            return self.match("get", path)
        return None

    async def dispatch(self, vreq: VirtualRequest, pub: Publisher) -> VirtualResponse:
        """Run the matching handler; every outcome is a response, never an exception."""
        path = urllib.parse.urlsplit(vreq.url).path or "/"
        found = self.match(vreq.method, path)
        if found is None:
            return VirtualResponse(404, {}, _phrase(404))
        route, params = found
        req = Request(vreq, params, pub)
        res = Response()
        try:
            result = await self._call(route, req, res)
        except HttpError as exc:
            fresh = Response().status(exc.status).set(exc.headers)
            return fresh.send(exc.body).as_virtual()
        except Exception:
            log.exception("%s %s failed", req.method, req.url)
            return VirtualResponse(500, {}, _phrase(500))
        if isinstance(result, Response):
            res = result
        elif isinstance(result, VirtualResponse):
            return result
        if not res.sent:
            res.send(result)
        return res.as_virtual()

    async def _call(self, route: Route, req: Request, res: Response) -> Any:
        args = (req, res) if route.wants_res else (req,)
        if route.is_async:
            return await route.handler(*args)
        req._loop = asyncio.get_running_loop()
        result = await asyncio.to_thread(route.handler, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- serving over NATS --------------------------------------------------------------------
    async def start(self, pub: Publisher) -> RouterService:
        """Join the workers' queue groups; returns the running service (stop it, or use
        `serve`). Only what is registered is subscribed: a worker with only hooks never
        takes a virtual request, and one without hooks is never asked about them."""
        service = RouterService(self, pub)
        await service.start()
        return service

    async def serve(
        self,
        pub: Publisher,
        *,
        started: Callable[[], None] | None = None,
        handle_signals: bool = False,
    ) -> None:
        """Answer until cancelled (or, with `handle_signals`, until SIGTERM or SIGINT),
        then leave the queue groups and finish the requests already taken."""
        service = await self.start(pub)
        if started is not None:
            started()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await service.stop()

    async def check_connect(self, check: ConnectCheck) -> ConnectAnswer:
        handler = self._before_connect
        if handler is None:
            return ConnectAnswer(True)
        try:
            result = await _call_plain(handler, check)
        except Reject as exc:
            return ConnectAnswer(False, message=exc.message)
        except Exception:
            log.exception("before_connect failed for %s", check.socket_id)
            return ConnectAnswer(False, message="Unauthorized: the authorization check failed")
        if result is None or result is False:
            return ConnectAnswer(False, message="Unauthorized")
        return ConnectAnswer(True, claims=None if result is True else result)

    async def notify_disconnect(self, gone: Disconnected) -> None:
        if self._after_disconnect is not None:
            await _call_plain(self._after_disconnect, gone)


async def _call_plain(handler: Handler, arg: Any) -> Any:
    if _is_async(handler):
        return await handler(arg)
    result = await asyncio.to_thread(handler, arg)
    if inspect.isawaitable(result):
        result = await result
    return result


class RouterService:
    """A router answering on one publisher's NATS connection."""

    def __init__(self, router: Router, pub: Publisher) -> None:
        self.router = router
        self.pub = pub
        self.subjects = pub.subjects
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(router.max_concurrency)
        self.handled = 0

    async def start(self) -> None:
        nc = self.pub.nats
        r, s, q = self.router, self.subjects, self.router.queue
        if r.routes:
            self._subs.append(await nc.subscribe(s.virtual_requests, q, cb=self._on_vreq))
        if r._before_connect is not None:
            self._subs.append(await nc.subscribe(s.hook_connect, q, cb=self._on_connect))
        if r._after_disconnect is not None:
            self._subs.append(await nc.subscribe(s.hook_disconnect, q, cb=self._on_disconnect))
        if not self._subs:
            raise UsageError("the router has no route and no hook: nothing to serve")
        await nc.flush()  # subscribed on the server before we say we are serving

    async def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Leave the queue groups, answer what was already taken, then return."""
        for sub in self._subs:
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
            except Exception:
                log.debug("draining a subscription failed", exc_info=True)
        self._subs.clear()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
        try:
            await self.pub.flush(timeout=timeout_s)
        except Exception:
            log.warning("could not flush the last answers", exc_info=True)

    async def _spawn(self, work: Awaitable[None]) -> None:
        await self._slots.acquire()  # backpressure: the rest waits in the subscription
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("worker task failed", exc_info=task.exception())

    async def _on_vreq(self, msg: Msg) -> None:
        await self._spawn(self._answer(msg))

    async def _answer(self, msg: Msg) -> None:
        started = time.perf_counter()
        try:
            vreq = decode_vrequest(msg.data)
        except MalformedEnvelope as exc:
            log.warning("ignored a malformed virtual request: %s", exc)
            if msg.reply:
                await self.pub.nats.publish(
                    msg.reply, encode_reply(False, error="bad_request", message=str(exc))
                )
            return
        response = await self.router.dispatch(vreq, self.pub)
        try:
            body = encode_vresponse(response)
        except NotSerializable as exc:
            log.error("%s %s: %s", vreq.method.upper(), vreq.url, exc)
            body = encode_vresponse(VirtualResponse(500, {}, _phrase(500)))
        if len(body) > self.pub.nats.max_payload:
            log.error(
                "%s %s: answer of %d bytes exceeds NATS max_payload",
                vreq.method.upper(),
                vreq.url,
                len(body),
            )
            body = encode_vresponse(VirtualResponse(500, {}, _phrase(500)))
        if msg.reply:
            await self.pub.nats.publish(msg.reply, body)
        self.handled += 1
        log.debug(
            "%s %s -> %d in %.1f ms",
            vreq.method.upper(),
            vreq.url,
            response.status,
            (time.perf_counter() - started) * 1000,
        )

    async def _on_connect(self, msg: Msg) -> None:
        await self._spawn(self._answer_connect(msg))

    async def _answer_connect(self, msg: Msg) -> None:
        try:
            socket_id, gateway_id, handshake = decode_connect_question(msg.data)
        except MalformedEnvelope as exc:
            log.warning("ignored a malformed connect question: %s", exc)
            return
        answer = await self.router.check_connect(
            ConnectCheck(socket_id, gateway_id, handshake, self.pub)
        )
        try:
            body = encode_connect_answer(answer)
        except NotSerializable as exc:
            log.error("before_connect answer for %s: %s", socket_id, exc)
            body = encode_connect_answer(ConnectAnswer(False, message="Unauthorized"))
        if msg.reply:
            await self.pub.nats.publish(msg.reply, body)

    async def _on_disconnect(self, msg: Msg) -> None:
        await self._spawn(self._handle_disconnect(msg))

    async def _handle_disconnect(self, msg: Msg) -> None:
        try:
            notice: DisconnectNotice = decode_disconnect(msg.data)
        except MalformedEnvelope as exc:
            log.warning("ignored a malformed disconnect notice: %s", exc)
            return
        gone = Disconnected(
            notice.socket_id,
            notice.gateway_id,
            notice.reason,
            notice.rooms,
            notice.handshake,
            self.pub,
        )
        try:
            await self.router.notify_disconnect(gone)
        except Exception:
            log.exception("after_disconnect failed for %s", notice.socket_id)
