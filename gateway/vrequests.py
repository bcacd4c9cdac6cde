"""Virtual requests: sails.io.js `io.socket.get('/user/5', cb)` answered by workers.

The client emits an event named after the method (`get`, `post`, `put`, `patch`,
`delete`, `options`, `head`) with `{method, url, headers, data}` and an ack. Here it is
checked as Sails checks it, shaped as Sails shapes `req`, sent to the workers' queue
group (`<p>.vreq`, request/reply), and the answer goes back as the ack Sails sends, the
JWR `{body, headers, statusCode}`, with `set-cookie` removed.

Every request with an ack gets exactly one answer, and never hangs: no worker
subscribed, or NATS not connected at that moment → 503 at once, no answer within
`--virtual-request-timeout-s` → 504, an answer that does not parse → 502, over the
per-socket rate (`--virtual-request-rate-per-s`), over its client IP's
(`--virtual-request-ip-rate-per-s`, all sockets of that IP together, the IP as
`--trust-proxy` decides it) or more than `--virtual-request-max-inflight` requests of
one socket in flight → 429, a request over `--max-payload-bytes` once encoded for the
workers (with the handshake) → 413, a request nested deeper than MAX_DEPTH levels
(which the wire encoding could not carry) → 400, checked before anything walks it.
Each refusal by a limit (429, 413, 400) is also counted in
`refusals_total`; every log line about a request carries its `sid` and `request_id`
(the client's `x-request-id`, or one made here; the worker gets it as `request_id`,
beside the headers, which stay what the client sent, as in Sails).

Parse errors follow sails-hook-sockets: no `url`, a `url` that is not a string, or an
SDK version (`__sails_io_sdk_version` in the handshake query) that is missing (taken
as 0.9.0) or older than 0.11.0 get the hook's error object (not a JWR) in the ack, or
as the event `sails:parseError` when there is no ack. An SDK version that is not
semver is a parse error too (Sails' own check throws on it and never answers).

The request a worker sees (shared.vrequest.VirtualRequest): `method` is the event
name; `body` is `data` (an array stays an array), merged over the legacy `params`;
`headers` are the client's, except `cookie` and `nosession` from the handshake when
it has them, and `origin`, which is always the handshake's: a virtual request cannot
fake it. When the handshake had no cookie and a response sets one, that cookie is
kept for the socket's later requests, as Sails does with its session cookie.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, Final

import orjson

from gateway.broker import Broker
from gateway.limits import KeyedBuckets, TokenBucket
from gateway.logs import Throttled
from gateway.metrics import GatewayMetrics
from gateway.settings import VirtualRequestSettings
from shared.errors import GatewayTimeout, MalformedEnvelope, TransportError
from shared.subjects import Subjects
from shared.vrequest import (
    METHODS,
    Handshake,
    VirtualRequest,
    decode_vresponse,
    encode_vrequest,
)

log = logging.getLogger(__name__)

PARSE_ERROR_EVENT: Final = "sails:parseError"
PARSE_ERROR_CODE: Final = "SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ"
PARSE_ERROR_NAME: Final = f"Error ({PARSE_ERROR_CODE}):"
"""What sails-hook-sockets' error pack names every error it makes: `Error (<code>):`."""
PARSE_ERROR_MESSAGE: Final = "Failed to parse incoming socket.io request."
SDK_VERSION_PARAM: Final = "__sails_io_sdk_version"
MISSING_SDK_VERSION: Final = "0.9.0"
"""What Sails assumes when a client sends no SDK version (before 0.10 there was none)."""
MIN_SDK_VERSION: Final = (0, 11, 0)
_SEMVER: Final = re.compile(
    r"\s*[v=]?\s*(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?\s*"
)
_DETAIL_CHARS: Final = 200
MAX_DEPTH: Final = 200
"""Deepest nesting of a virtual request's arrays and objects: the encoding for the
workers (orjson, at most 254 levels, the envelope included) must never fail on it."""

LIMIT_WORDS: Final = {
    "rate": "over the request rate",
    "ip_rate": "over the client IP's request rate",
    "inflight": "too many requests in flight",
}
"""The inbound limits `VirtualRequests.admit` applies, as log lines say them."""

Emit = Callable[[str, str, Any], Awaitable[None]]
"""emit(socket id, event, data): send one event to one local socket."""


def sdk_version_problem(handshake: Handshake) -> str | None:
    """Why Sails would refuse this socket's virtual requests, or None."""
    version = handshake.query.get(SDK_VERSION_PARAM) or handshake.headers.get(
        SDK_VERSION_PARAM, MISSING_SDK_VERSION
    )
    match = _SEMVER.fullmatch(version)
    if match is None:
        return f"The socket.io/sails.io.js client SDK version {version!r} is not a semver version."
    if tuple(int(g) for g in match.groups()) < MIN_SDK_VERSION:
        return (
            "This version of Sails is not compatible with the socket.io/sails.io.js client "
            f"SDK version you are using ({version}). Please see "
            "https://sailsjs.com/documentation/upgrading/to-v-0-11 for more information-- "
            "then please continue upgrading all the way to the installed version of Sails."
        )
    return None


def parse_error(details: str) -> dict[str, Any]:
    """The hook's error object, as Sails sends it, keys in its order (its stack trace
    left out)."""
    return {
        "code": PARSE_ERROR_CODE,
        "name": PARSE_ERROR_NAME,
        "status": 400,
        "message": PARSE_ERROR_MESSAGE,
        "details": details,
    }


def deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests arrays/objects more than `limit` levels deep (iterative:
    any depth is checked without recursion, and it stops at the first one too deep)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def jwr(status: int, headers: dict[str, Any], body: Any) -> dict[str, Any]:
    """A JSON WebSocket Response, keys in Sails' wire order."""
    return {"body": body, "headers": headers, "statusCode": status}


def status_jwr(status: int) -> dict[str, Any]:
    """A gateway-made answer: the status phrase as body (`"Service Unavailable"`), as
    Sails' `res.sendStatus` answers."""
    return jwr(status, {}, _phrase(status))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)


def _short(value: Any) -> str:
    """The offending value for the error's details, as JSON (clients are JavaScript)."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "…"


def request_headers(client: Any, handshake: Handshake) -> dict[str, str]:
    """Sails' rule: the client's headers, but `cookie` and `nosession` from the handshake
    when it has them, and `origin` always from the handshake."""
    headers: dict[str, str] = {}
    if isinstance(client, dict):
        for name, value in client.items():
            if isinstance(value, str):
                headers[str(name).lower()] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                headers[str(name).lower()] = str(value)
    headers.pop("origin", None)
    for name in ("cookie", "nosession", "origin"):
        value = handshake.headers.get(name)
        if value is not None:
            headers[name] = value
    return headers


def request_body(msg: dict[str, Any]) -> Any:
    """`data` (an array stays an array) merged over the legacy `params`."""
    data, params = msg.get("data"), msg.get("params")
    if isinstance(data, list):
        return data
    if data is not None and not isinstance(data, dict):
        return data
    body: dict[str, Any] = dict(params) if isinstance(params, dict) else {}
    body.update(data or {})
    return body


def response_headers(headers: Any) -> tuple[dict[str, str], str | None]:
    """Lower-case names with `set-cookie` removed; also the first cookie it set."""
    out: dict[str, str] = {}
    cookie = None
    for name, value in headers.items() if isinstance(headers, dict) else ():
        low = str(name).lower()
        if low == "set-cookie":
            first = value[0] if isinstance(value, list) and value else value
            if isinstance(first, str) and first:
                cookie = first.split(";", 1)[0].strip()
            continue
        out[low] = value
    return out, cookie


@dataclass(slots=True)
class SocketState:
    handshake: Handshake
    sdk_problem: str | None
    bucket: TokenBucket | None
    ip: str
    """The client IP whose shared bucket this socket draws on ("" when no per-IP limit)."""
    ip_bucket: TokenBucket | None
    inflight: int = 0


class VirtualRequests:
    """Forward one gateway's virtual requests; `track`/`forget` follow its sockets."""

    def __init__(
        self,
        settings: VirtualRequestSettings,
        *,
        gateway_id: str,
        subjects: Subjects,
        max_payload_bytes: int,
        broker: Broker,
        metrics: GatewayMetrics,
        emit: Emit,
    ) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        self.max_payload_bytes = max_payload_bytes
        self.subject = subjects.virtual_requests
        self.broker = broker
        self.metrics = metrics
        self._emit = emit
        self._sockets: dict[str, SocketState] = {}
        self._counted = {
            label: metrics.virtual_requests.labels(label)
            for label in ("1xx", "2xx", "3xx", "4xx", "5xx", "parse_error")
        }
        self._warnings = Throttled(log)
        self._seq = 0
        self._ip_buckets = (
            KeyedBuckets(settings.virtual_request_ip_rate_per_s, settings.virtual_request_ip_burst)
            if settings.virtual_request_ip_rate_per_s > 0
            else None
        )

    @property
    def events(self) -> tuple[str, ...]:
        return METHODS

    def track(self, sid: str, handshake: Handshake) -> None:
        s = self.settings
        now = time.monotonic()
        bucket = (
            TokenBucket(s.virtual_request_rate_per_s, s.virtual_request_burst, now)
            if s.virtual_request_rate_per_s > 0
            else None
        )
        ip, ip_bucket = "", None
        if self._ip_buckets is not None:
            ip = handshake.ip or handshake.address
            ip_bucket = self._ip_buckets.acquire(ip, now)
        self._sockets[sid] = SocketState(
            handshake, sdk_version_problem(handshake), bucket, ip, ip_bucket
        )

    def forget(self, sid: str) -> Handshake | None:
        state = self._sockets.pop(sid, None)
        if state is None:
            return None
        if state.ip_bucket is not None and self._ip_buckets is not None:
            self._ip_buckets.release(state.ip)
        return state.handshake

    def handshake(self, sid: str) -> Handshake | None:
        state = self._sockets.get(sid)
        return state.handshake if state is not None else None

    async def handle(self, sid: str, method: str, args: tuple[Any, ...], ack: bool) -> Any:
        """One virtual request; returns the ack payload (None when there is no ack). A
        bug on the way is answered 500, its traceback logged at most once per 5 s:
        every request with an ack gets exactly one answer, whatever it held."""
        try:
            return await self._handle(sid, method, args, ack)
        except Exception:
            self._counted["5xx"].inc()
            self._warnings.exception(
                "internal", "%s: failed in the gateway, answered 500", method, extra={"sid": sid}
            )
            return status_jwr(500) if ack else None

    async def _handle(self, sid: str, method: str, args: tuple[Any, ...], ack: bool) -> Any:
        state = self._sockets.get(sid)
        if state is None:  # connected a moment ago on another path; should not happen
            return status_jwr(503) if ack else None
        msg = args[0] if args else None
        if deeper_than(args, MAX_DEPTH):  # before anything walks it
            self._refused("virtual_request_too_deep")
            self._warnings.warning(
                "too_deep",
                "%s: request nested deeper than %d levels",
                method,
                MAX_DEPTH,
                extra={"sid": sid},
            )
            return status_jwr(400) if ack else None
        headers = request_headers(
            msg.get("headers") if isinstance(msg, dict) else None, state.handshake
        )
        self._seq += 1
        request_id = headers.get("x-request-id") or f"{self.gateway_id}-{self._seq:x}"
        ctx = {"sid": sid, "request_id": request_id}  # on every log line about it
        problem = self._parse_problem(msg, state)
        if problem is not None:
            error = parse_error(problem)
            self._counted["parse_error"].inc()
            log.info("virtual request refused: %s", problem, extra=ctx)
            if ack:
                return error
            await self._emit(sid, PARSE_ERROR_EVENT, error)
            return None
        assert isinstance(msg, dict)
        url = msg["url"]
        limit = self.admit(state)
        if limit is not None:
            self._counted["4xx"].inc()
            self.metrics.refusals.labels(f"virtual_request_{limit}").inc()
            self._warnings.warning(limit, "%s %s: %s", method, url, LIMIT_WORDS[limit], extra=ctx)
            return status_jwr(429) if ack else None
        try:
            answer = await self._forward(method, msg, headers, state, ctx)
        finally:
            state.inflight -= 1
        return answer if ack else None

    def state(self, sid: str) -> SocketState | None:
        """A tracked socket's handshake and request budget (None once it has gone)."""
        return self._sockets.get(sid)

    def admit(self, state: SocketState) -> str | None:
        """Spend one inbound request of this socket (virtual request or client event)
        from its rate, its IP's rate and its in-flight allowance: the limit that refuses
        it (`rate`, `ip_rate`, `inflight`), or None with the request now in flight (the
        caller decrements `state.inflight` when it is answered)."""
        now = time.monotonic()
        if state.bucket is not None and not state.bucket.take(now):
            return "rate"
        if state.ip_bucket is not None and not state.ip_bucket.take(now):
            return "ip_rate"
        if state.inflight >= self.settings.virtual_request_max_inflight:
            return "inflight"
        state.inflight += 1
        return None

    def _parse_problem(self, msg: Any, state: SocketState) -> str | None:
        url = msg.get("url") if isinstance(msg, dict) else None
        if not url:
            return f"No url provided in request: {_short(msg)}"
        if not isinstance(url, str):
            return f"Invalid url provided: {_short(url)}"
        return state.sdk_problem

    def _refused(self, reason: str) -> None:
        """A limit refused the request before it reached a worker (answered 4xx)."""
        self._counted["4xx"].inc()
        self.metrics.refusals.labels(reason).inc()

    async def _forward(
        self,
        method: str,
        msg: dict[str, Any],
        headers: dict[str, str],
        state: SocketState,
        ctx: dict[str, str],
    ) -> dict[str, Any]:
        url = msg["url"]
        log.debug("%s %s", method, url, extra=ctx)
        request = VirtualRequest(
            method=method,
            url=url,
            headers=headers,
            body=request_body(msg),
            socket_id=ctx["sid"],
            gateway_id=self.gateway_id,
            handshake=state.handshake,
            request_id=ctx["request_id"],
        )
        started = time.perf_counter()
        payload = encode_vrequest(request)
        if len(payload) > self.max_payload_bytes:
            self._refused("virtual_request_too_large")
            self._warnings.warning(
                "too_large",
                "%s %s: request too large (%d bytes with the handshake)",
                method,
                url,
                len(payload),
                extra=ctx,
            )
            return status_jwr(413)
        if not self.broker.connected:  # nats-py would hold it until the timeout: 504
            self._warnings.warning(
                "no_nats", "%s %s: NATS is not connected", method, url, extra=ctx
            )
            return self._answered(status_jwr(503), started)
        try:
            reply = await self.broker.request(
                self.subject, payload, timeout=self.settings.virtual_request_timeout_s
            )
            response = decode_vresponse(reply)
        except GatewayTimeout:
            self._warnings.warning(
                "timeout", "%s %s: no worker answered in time", method, url, extra=ctx
            )
            return self._answered(status_jwr(504), started)
        except TransportError as exc:
            self._warnings.warning(
                "no_worker", "%s %s: no worker (%s)", method, url, exc, extra=ctx
            )
            return self._answered(status_jwr(503), started)
        except MalformedEnvelope as exc:
            self._warnings.warning(
                "bad_answer", "%s %s: bad answer: %s", method, url, exc, extra=ctx
            )
            return self._answered(status_jwr(502), started)
        else:
            headers, cookie = response_headers(response.headers)
            if cookie and state.handshake.cookie is None:
                state.handshake = replace(
                    state.handshake, headers={**state.handshake.headers, "cookie": cookie}
                )
            return self._answered(jwr(response.status, headers, response.body), started)

    def _answered(self, answer: dict[str, Any], started: float) -> dict[str, Any]:
        counter = self._counted.get(f"{int(answer['statusCode']) // 100}xx")
        if counter is not None:
            counter.inc()
        self.metrics.virtual_request_duration.observe(time.perf_counter() - started)
        return answer
