"""`Router`: routes and connection hooks of one application, and dispatch — running
the matching handler and turning every outcome into a response (no NATS here; the
queue-group service is `publisher.router.service`)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from publisher.router.events import Event
from publisher.router.hooks import Allow, ConnectCheck, Connected, Disconnected, Reject
from publisher.router.request import HttpError, Request, Response, phrase
from publisher.router.routes import (
    ANY_METHOD,
    Handler,
    Route,
    arity_of,
    find_route,
    is_async,
    make_route,
)
from publisher.router.service import RouterService, serve_until_stopped
from shared.client_events import EventAnswer, SocketEvent, check_event_name
from shared.errors import MalformedEnvelope, UsageError
from shared.subjects import WORKER_QUEUE
from shared.vrequest import ConnectAnswer, VirtualRequest, VirtualResponse

if TYPE_CHECKING:
    from publisher.client import Publisher

log = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY: Final = 256
"""Requests one worker process runs at once; more wait in its NATS subscription."""


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
        self.events: dict[str, Handler] = {}
        self._before_connect: Handler | None = None
        self._after_disconnect: Handler | None = None
        self._after_connect: Handler | None = None

    # -- registration ------------------------------------------------------------------------
    def add(self, address: str, handler: Handler, *, method: str | None = None) -> Route:
        """`add("GET /user/:id", fn)`, or `add("/user/:id", fn, method="get")`; a
        pattern without a method answers every method."""
        route = make_route(address, handler, method=method)
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
        return self._verb(ANY_METHOD, pattern)

    def event(self, name: str) -> Callable[[Handler], Handler]:
        """`@router.event("typing")`: `handler(ev: Event)`, sync or async, runs for a
        client's `socket.emit("typing", data, ack)`; its return value is the ack's
        argument (a tuple: several arguments; None: none). Events no worker declares
        are refused by the gateway, counted."""
        try:
            check_event_name(name)
        except MalformedEnvelope as exc:
            raise UsageError(f"cannot declare event {name!r}: {exc}") from None
        if name in self.events:
            raise UsageError(f"event {name!r} is already declared")

        def register(handler: Handler) -> Handler:
            if arity_of(handler, f"event {name!r}") != 1:
                raise UsageError(f"the handler of event {name!r} must take (ev)")
            self.events[name] = handler
            return handler

        return register

    def before_connect(self, handler: Handler) -> Handler:
        """`handler(check: ConnectCheck)`, sync or async. Return True (or data to hand to
        every request of the socket as `req.claims`) to accept, or `Allow(user_id=...,
        info=..., rooms=[...], data=...)` to accept and say who the socket is and which
        rooms it joins before its client sees the connect; False, None or
        `raise Reject("why")` to refuse."""
        arity_of(handler, "before_connect")
        self._before_connect = handler
        return handler

    def after_disconnect(self, handler: Handler) -> Handler:
        """`handler(gone: Disconnected)`, sync or async: a socket has disconnected."""
        arity_of(handler, "after_disconnect")
        self._after_disconnect = handler
        return handler

    def after_connect(self, handler: Handler) -> Handler:
        """`handler(c: Connected)`, sync or async: a socket has connected (told to one
        worker, once; not for a socket that recovered its session)."""
        arity_of(handler, "after_connect")
        self._after_connect = handler
        return handler

    @property
    def answers_requests(self) -> bool:
        """At least one route is registered."""
        return bool(self.routes)

    @property
    def event_names(self) -> tuple[str, ...]:
        """The client events this router declares."""
        return tuple(self.events)

    @property
    def answers_connect(self) -> bool:
        """A `before_connect` hook is registered."""
        return self._before_connect is not None

    @property
    def hears_disconnect(self) -> bool:
        """An `after_disconnect` hook is registered."""
        return self._after_disconnect is not None

    @property
    def hears_connect(self) -> bool:
        """An `after_connect` hook is registered."""
        return self._after_connect is not None

    # -- dispatch (no NATS: usable in unit tests) --------------------------------------------
    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The first route for this method (or any method) matching the path, and its
        URL-decoded parameters; HEAD falls back to the GET routes."""
        return find_route(self.routes, method, path)

    async def dispatch(self, vreq: VirtualRequest, pub: Publisher) -> VirtualResponse:
        """Run the matching handler; every outcome is a response, never an exception."""
        path = urllib.parse.urlsplit(vreq.url).path or "/"
        found = self.match(vreq.method, path)
        if found is None:
            return VirtualResponse(404, {}, phrase(404))
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
            return VirtualResponse(500, {}, phrase(500))
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
        takes a virtual request, one without hooks is never asked about them, and a
        client event reaches only workers that declared it."""
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
        await serve_until_stopped(service, started=started, handle_signals=handle_signals)

    async def handle_event(self, ev: SocketEvent, pub: Publisher) -> EventAnswer:
        """Run the event's handler; every outcome is an answer, never an exception."""
        handler = self.events.get(ev.event)
        if handler is None:
            return EventAnswer(error="undeclared", message=f"no handler for {ev.event!r}")
        try:
            result = await _call_plain(handler, Event(ev, pub))
        except Exception:
            log.exception("event %r from %s failed", ev.event, ev.socket_id)
            return EventAnswer(error="failed", message="the handler failed")
        if result is None:
            return EventAnswer()
        return EventAnswer(args=result if isinstance(result, tuple) else (result,))

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
        if isinstance(result, Allow):
            return allow_answer(result)
        return ConnectAnswer(True, claims=None if result is True else result)

    async def notify_disconnect(self, gone: Disconnected) -> None:
        if self._after_disconnect is not None:
            await _call_plain(self._after_disconnect, gone)

    async def notify_connect(self, came: Connected) -> None:
        if self._after_connect is not None:
            await _call_plain(self._after_connect, came)


def allow_answer(allow: Allow) -> ConnectAnswer:
    """An `Allow` on the wire: its values as given (the gateway validates them against
    its own limits, so a refusal names the problem to the client as well)."""
    rooms = [allow.rooms] if isinstance(allow.rooms, str) else list(allow.rooms)
    return ConnectAnswer(
        True,
        claims=allow.data,
        user=allow.user_id,
        info=dict(allow.info) if isinstance(allow.info, Mapping) else allow.info,
        rooms=rooms or None,
    )


async def _call_plain(handler: Handler, arg: Any) -> Any:
    if is_async(handler):
        return await handler(arg)
    result = await asyncio.to_thread(handler, arg)
    if inspect.isawaitable(result):
        result = await result
    return result
