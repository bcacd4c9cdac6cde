"""What a route handler sees and answers with: `Request` (Sails' `req` for a socket
request), `Response` (Sails' `res`) and `HttpError`."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Coroutine, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson

from shared.errors import UsageError
from shared.vrequest import Handshake, VirtualRequest, VirtualResponse

if TYPE_CHECKING:
    from publisher.client import Publisher

T = TypeVar("T")
SYNC_RUN_TIMEOUT_S: Final = 30.0


class HttpError(Exception):
    """Raise from a handler to answer with this status (body defaults to its phrase)."""

    def __init__(
        self, status: int, body: Any = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {body if body is not None else phrase(status)}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def phrase(status: int) -> str:
    """The reason phrase of a status (`"Not Found"`), the body Sails answers by default."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)


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
        self.request_id = vreq.request_id
        """The gateway's id of this request (its logs' `request_id`): the client's
        `x-request-id` when it sent one, else made by the gateway. Not a header: Sails'
        `req.headers` holds only what the client sent."""
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


def _jsonable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _parse_query(query: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name in out:
            prev = out[name]
            out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[name] = value
    return out


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
        """Answer with `body` as it is (a string stays raw text, recorded jwr.02); none
        gives the status phrase (`"OK"`), as Sails does."""
        if self.sent:
            raise UsageError("this request was already answered")
        self.body = phrase(self.status_code) if body is None else body
        self.sent = True
        return self

    def json(self, body: Any = None) -> Response:
        """Sails' `res.json` for a socket request: a string goes out JSON-encoded, as
        JSON *text*, with `content-type: application/json` (recorded:
        `res.serverError("boom")` → `"\\"boom\\""`); anything else as it is, no header."""
        if isinstance(body, str):
            self.set("content-type", "application/json")
            return self.send(orjson.dumps(body).decode())
        return self.send(body)

    def send_status(self, code: int) -> Response:
        return self.status(code).send()

    # Sails 1.5's default responses: ok, badRequest and serverError answer through
    # res.json (nothing given: the status phrase); forbidden and notFound take no body
    # there (here a body is sent as given, docs/sails-compat.md P4).
    def ok(self, body: Any = None) -> Response:
        return self.status(200).json(body)

    def created(self, body: Any = None) -> Response:
        """201, answered as `ok` (Sails 0.12's `res.created`; 1.x dropped it)."""
        return self.status(201).json(body)

    def bad_request(self, body: Any = None) -> Response:
        return self.status(400).json(body)

    def forbidden(self, body: Any = None) -> Response:
        return self.status(403).send(body)

    def not_found(self, body: Any = None) -> Response:
        return self.status(404).send(body)

    def server_error(self, body: Any = None) -> Response:
        """500 through `json`; what JSON cannot hold (an exception) is sent as its text."""
        if body is not None and not _jsonable(body):
            body = str(body)
        return self.status(500).json(body)

    def as_virtual(self) -> VirtualResponse:
        return VirtualResponse(status=self.status_code, headers=self.headers, body=self.body)
