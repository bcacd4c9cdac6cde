"""The HTTP server API: `POST /api/<method>` on its own port, for apps that do not speak
NATS. Another face of the publisher's operations (gateway/api_methods.py), with API
keys, a body size limit, a `batch` method, Idempotency-Key replays, JSON errors naming
the bad field, and per-method metrics. Documented in docs/api.openapi.json."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from gateway.api_methods import METHODS, FieldError, Method
from gateway.metrics import GatewayMetrics
from gateway.settings import ApiSettings
from publisher.sockets import Sockets
from shared.errors import (
    GatewayTimeout,
    LimitExceeded,
    NoSuchSocket,
    PayloadTooLarge,
    PublisherClosed,
    TransportError,
    UsageError,
)

BATCH: Final = "batch"
UNKNOWN: Final = "unknown"
"""The `method` label of calls to no method (fixed cardinality)."""
AUTH_SCHEME: Final = "apikey"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
MAX_IDEMPOTENCY_KEY_CHARS: Final = 255


class ApiError(Exception):
    """An answer other than 200: its status, code, message and the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": str(self)}
        if self.field:
            error["field"] = self.field
        return {"error": error}


def as_api_error(exc: Exception) -> ApiError:
    """The publisher's errors as HTTP answers (docs/api.openapi.json lists them)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, FieldError):
        return ApiError(400, exc.code, str(exc), exc.field)
    if isinstance(exc, PayloadTooLarge):
        return ApiError(413, "payload_too_large", str(exc), "data")
    if isinstance(exc, PublisherClosed):
        return ApiError(503, "unavailable", str(exc))
    if isinstance(exc, UsageError):
        return ApiError(400, "invalid_request", str(exc))
    if isinstance(exc, NoSuchSocket):
        return ApiError(404, "no_such_socket", str(exc))
    if isinstance(exc, LimitExceeded):
        return ApiError(409, "limit_exceeded", str(exc))
    if isinstance(exc, GatewayTimeout):
        return ApiError(504, "gateway_timeout", str(exc))
    if isinstance(exc, TransportError):
        return ApiError(503, "transport_error", str(exc))
    raise exc


Answer = tuple[int, bytes]
"""An HTTP answer: status and JSON body."""
Kept = tuple[bytes, Answer]
"""What an Idempotency-Key keeps: the request body's SHA-256, and the answer."""


class IdempotencyCache:
    """Answers by Idempotency-Key, each kept `window_s`, at most `max_keys` (the oldest
    forgotten first): bounded memory however many keys clients send."""

    def __init__(
        self, window_s: float, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s, self.max_keys, self._clock = window_s, max_keys, clock
        self._answers: OrderedDict[str, tuple[float, Kept]] = OrderedDict()

    def get(self, key: str) -> Kept | None:
        """(the request body's fingerprint, the answer), if kept."""
        self._expire()
        kept = self._answers.get(key)
        return kept[1] if kept is not None else None

    def put(self, key: str, fingerprint: bytes, answer: Answer) -> None:
        if self.max_keys == 0:
            return
        self._answers[key] = (self._clock() + self.window_s, (fingerprint, answer))
        self._answers.move_to_end(key)
        while len(self._answers) > self.max_keys:
            self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)

    def _expire(self) -> None:
        now = self._clock()
        while self._answers:
            key, (until, _) = next(iter(self._answers.items()))
            if until > now:
                break
            del self._answers[key]


class HttpApi:
    """The aiohttp application of the API port."""

    def __init__(
        self,
        settings: ApiSettings,
        sockets: Sockets,
        metrics: GatewayMetrics,
        *,
        max_body_bytes: int,
    ) -> None:
        self._keys = tuple(k.encode() for k in settings.api_key)
        self._sockets = sockets
        self._metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._idempotency = IdempotencyCache(
            settings.api_idempotency_window_s, settings.api_idempotency_max_keys
        )
        self._running: dict[str, asyncio.Future[Answer | None]] = {}
        """Keyed calls in progress: a repeat waits for the first one's answer."""

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post("/api/{method}", self._handle)
        app.router.add_route("*", "/api/{method}", self._not_post)
        return app

    async def _not_post(self, request: web.Request) -> web.Response:
        error = ApiError(405, "method_not_allowed", f"use POST, not {request.method}")
        self._count(UNKNOWN, error.code, time.perf_counter())
        return web.Response(
            status=405,
            body=orjson.dumps(error.body()),
            content_type="application/json",
            headers={"Allow": "POST"},
        )

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        name = request.match_info["method"]
        label = name if name in METHODS or name == BATCH else UNKNOWN
        try:
            self._authorize(request)
            key = _idempotency_key(request, name)
            raw = await self._read(request)
            fingerprint = hashlib.sha256(raw).digest() if key is not None else b""
            if key is not None:
                kept = await self._kept(key, fingerprint)
                if kept is not None:
                    self._count(label, "replayed", started)
                    return _response(*kept, replayed=True)
        except ApiError as exc:
            self._count(label, exc.code, started)
            return _response(exc.status, orjson.dumps(exc.body()))
        if key is None:
            answer, outcome = await self._answer(name, raw)
        else:
            done: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
            self._running[key] = done  # no await since _kept: nobody else registered
            stored: Answer | None = None
            try:
                answer, outcome = await self._answer(name, raw)
                if answer[0] < 500:  # a 5xx may succeed when tried again
                    stored = answer
                    self._idempotency.put(key, fingerprint, answer)
            finally:
                del self._running[key]
                done.set_result(stored)  # a repeat waiting gets it, or tries itself
        self._count(label, outcome, started)
        return _response(*answer)

    async def _kept(self, key: str, fingerprint: bytes) -> Answer | None:
        """The answer kept for this key (after the call holding it, if one is in
        progress); ApiError if the key was used with another body."""
        while (running := self._running.get(key)) is not None:
            await asyncio.shield(running)
        kept = self._idempotency.get(key)
        if kept is None:
            return None
        if kept[0] != fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                f"this {IDEMPOTENCY_HEADER} was used for a different body",
                IDEMPOTENCY_HEADER,
            )
        return kept[1]

    async def _answer(self, name: str, raw: bytes) -> tuple[Answer, str]:
        try:
            status, outcome, payload = await self._run(name, _parse(raw))
        except ApiError as exc:
            return (exc.status, orjson.dumps(exc.body())), exc.code
        return (status, orjson.dumps(payload)), outcome

    def _authorize(self, request: web.Request) -> None:
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != AUTH_SCHEME or not given.strip():
            raise ApiError(
                401, "unauthorized", "send `Authorization: apikey <key>`", "Authorization"
            )
        token = given.strip().encode()
        matched = False
        for k in self._keys:  # every key compared, each in constant time
            matched |= hmac.compare_digest(token, k)
        if not matched:
            raise ApiError(401, "unauthorized", "unknown API key", "Authorization")

    async def _read(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(self.max_body_bytes) from None
        return raw

    async def _run(self, name: str, body: Any) -> tuple[int, str, Any]:
        """(status, outcome label, answer body) of one method call."""
        if name == BATCH:
            return 200, "ok", {"replies": await self._batch(body)}
        return 200, "ok", {"result": await self._call(_method(name), body)}

    async def _call(self, method: Method, body: Any) -> Any:
        """One method on the publisher; its errors as ApiError."""
        try:
            return await method.call(self._sockets, method.parse(body))
        except Exception as exc:
            raise as_api_error(exc) from None

    async def _batch(self, body: Any) -> list[dict[str, Any]]:
        """Each command in order, each answered on its own: one failing does not stop
        the others (their effects are not undone)."""
        if not isinstance(body, dict) or set(body) != {"commands"}:
            raise ApiError(
                400, "invalid_body", 'batch: the body must be {"commands": [...]}', "commands"
            )
        commands = body["commands"]
        if not isinstance(commands, list):
            raise ApiError(400, "invalid_field", "batch: commands must be a list", "commands")
        replies: list[dict[str, Any]] = []
        for i, command in enumerate(commands):
            started = time.perf_counter()
            label = UNKNOWN
            try:
                if not isinstance(command, dict) or not set(command) <= {"method", "params"}:
                    raise ApiError(
                        400,
                        "invalid_field",
                        f'batch: commands[{i}] must be {{"method": ..., "params": {{...}}}}',
                        f"commands[{i}]",
                    )
                name = command.get("method")
                try:
                    method = _method(name if isinstance(name, str) else "")
                except ApiError as exc:
                    exc.field = f"commands[{i}].method"
                    raise
                label = method.name
                result = await self._call(method, command.get("params", {}))
            except ApiError as exc:
                if exc.field and not exc.field.startswith("commands["):
                    exc.field = f"commands[{i}].params.{exc.field}"
                elif not exc.field:
                    exc.field = f"commands[{i}]"
                self._count(label, exc.code, started)
                replies.append({"status": exc.status, **exc.body()})
                continue
            self._count(label, "ok", started)
            replies.append({"status": 200, "result": result})
        return replies

    def _count(self, method: str, outcome: str, started: float) -> None:
        self._metrics.api_requests.labels(method, outcome).inc()
        self._metrics.api_request_duration.labels(method).observe(time.perf_counter() - started)


def _idempotency_key(request: web.Request, method: str) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
            IDEMPOTENCY_HEADER,
        )
    return f"{method}\0{key}"


def _parse(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None


def _method(name: str) -> Method:
    method = METHODS.get(name)
    if method is None:
        raise ApiError(
            404,
            "unknown_method",
            f"no API method {name!r} (methods: {', '.join([*METHODS, BATCH])})",
            "method",
        )
    return method


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body exceeds {limit} bytes (--max-payload-bytes)")


def _response(status: int, body: bytes, *, replayed: bool = False) -> web.Response:
    headers: Mapping[str, str] = {REPLAYED_HEADER: "true"} if replayed else {}
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)
