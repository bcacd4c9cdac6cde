"""The broker seam: what the gateway needs from NATS, and the NATS implementation.

nats-py normally gives every subscription its own queue and task. A gateway holds one
subscription per room and per socket, so that would cost a task per room and a queue
hop per message. `_DirectClient` instead hands each message for our subscriptions to
a plain callback, inline in the client's reader: no task, no queue, no `Msg` object,
and messages are handled in the order NATS delivered them, across subjects too.
This is the only module that touches nats-py internals (pinned to 2.16.x).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from gateway.logs import Throttled
from shared.config import NatsSettings
from shared.errors import GatewayTimeout, TransportError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""At start-up only; after that the client reconnects forever."""

Handler = Callable[[bytes, bytes, bytes], None]
"""Called with (subject, reply, data) for every message on a subscription."""


class Broker(Protocol):
    @property
    def connected(self) -> bool: ...

    async def subscribe(self, subject: str, handler: Handler) -> int: ...

    async def unsubscribe(self, sid: int) -> None: ...

    async def publish(self, subject: str, data: bytes) -> None: ...

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes: ...

    async def flush(self, timeout: float = 2.0) -> None: ...

    async def force_reconnect(self) -> None: ...

    async def close(self) -> None: ...


class _LiteSub:
    """What nats-py's client needs of a subscription to resubscribe it after a
    reconnect, drain it and close: a nats-py Subscription costs ~4 KB (its own queue
    and iterator), and a gateway holds two per connected socket."""

    __slots__ = ("_conn", "_id", "_max_msgs", "_queue", "_received", "_subject")

    _wait_for_msgs_task = None
    _message_iterator = None
    _pending_next_msgs_calls: dict[str, Any] = {}  # noqa: RUF012 - read-only, always empty

    def __init__(self, conn: _DirectClient, sid: int, subject: str) -> None:
        self._conn = conn
        self._id = sid
        self._subject = subject
        self._queue = ""
        self._max_msgs = 0
        self._received = 0

    async def _drain(self) -> None:
        try:
            await self._conn._send_unsubscribe(self._id)
            await self._conn.flush()
        finally:
            self._conn.direct.pop(self._id, None)
            self._conn._remove_sub(self._id)


class _DirectClient(NatsClient):
    def __init__(self) -> None:
        super().__init__()
        self.direct: dict[int, Handler] = {}
        self.on_handler_error: Callable[[BaseException], None] = lambda exc: None

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self.direct.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        try:
            handler(subject, reply, data)
        except Exception as exc:  # a bad message must never stop the reader
            log.exception("message handler failed on %s", subject[:200])
            self.on_handler_error(exc)


class NatsBroker:
    """The production broker. Reconnects forever; nats-py resubscribes on reconnect."""

    def __init__(self, nc: _DirectClient) -> None:
        self._nc = nc

    @classmethod
    async def connect(
        cls,
        settings: NatsSettings,
        *,
        name: str,
        on_disconnected: Callable[[], Awaitable[None]] | None = None,
        on_reconnected: Callable[[], Awaitable[None]] | None = None,
        on_handler_error: Callable[[BaseException], None] | None = None,
    ) -> NatsBroker:
        nc = _DirectClient()
        if on_handler_error is not None:
            nc.on_handler_error = on_handler_error

        warnings = Throttled(log)

        async def error_cb(exc: Exception) -> None:
            # nats-py reports every failed reconnect attempt (each 0.5 s while a server
            # is away): one line per kind of error every few seconds is enough.
            warnings.warning(type(exc).__name__, "NATS client error: %s", exc)

        async def noop() -> None:
            return None

        try:
            await asyncio.wait_for(
                nc.connect(
                    name=name,
                    error_cb=error_cb,
                    disconnected_cb=on_disconnected or noop,
                    reconnected_cb=on_reconnected or noop,
                    **settings.connect_kwargs(),
                ),
                CONNECT_TIMEOUT_S,
            )
        except Exception as exc:
            try:
                await nc.close()
            except Exception:
                log.debug("closing a half-open NATS client failed", exc_info=True)
            raise TransportError(f"cannot connect to NATS at {settings.describe()}: {exc}") from exc
        return cls(nc)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def client(self) -> NatsClient:
        return self._nc

    async def subscribe(self, subject: str, handler: Handler) -> int:
        """Subscribe with a handler called inline (see the module docstring). Subjects
        come from shared.subjects, which only builds valid ones."""
        nc = self._nc
        if nc.is_closed:
            raise TransportError("NATS connection is closed")
        nc._sid += 1
        sid: int = nc._sid
        sub = _LiteSub(nc, sid, subject)
        nc.direct[sid] = handler
        nc._subs[sid] = sub  # type: ignore[assignment]  # duck-typed on purpose
        await nc._send_subscribe(sub)  # type: ignore[arg-type]
        return sid

    async def unsubscribe(self, sid: int) -> None:
        nc = self._nc
        nc.direct.pop(sid, None)
        if nc._subs.pop(sid, None) is not None and not (
            nc.is_closed or nc.is_reconnecting or nc.is_draining
        ):
            await nc._send_unsubscribe(sid)

    async def publish(self, subject: str, data: bytes) -> None:
        try:
            await self._nc.publish(subject, data)
        except Exception as exc:
            raise TransportError(f"publish to {subject[:120]} failed: {exc}") from exc

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        try:
            msg = await self._nc.request(subject, data, timeout=timeout)
        except NoRespondersError:
            raise TransportError(f"nobody answers on {subject[:120]}") from None
        except NatsTimeoutError as exc:
            raise GatewayTimeout(f"no answer on {subject[:120]} within {timeout}s") from exc
        except Exception as exc:
            raise TransportError(f"request on {subject[:120]} failed: {exc}") from exc
        body: bytes = msg.data
        return body

    async def flush(self, timeout: float = 2.0) -> None:
        try:
            await self._nc.flush(timeout=math.ceil(timeout))
        except Exception as exc:
            raise TransportError(f"NATS flush failed: {exc}") from exc

    async def force_reconnect(self) -> None:
        """Drop the current server and reconnect (to another one of the cluster)."""
        try:
            await self._nc.force_reconnect()
        except Exception as exc:
            log.warning("forced NATS reconnect failed: %s", exc)

    async def drain(self) -> None:
        """Flush and unsubscribe, then close; while reconnecting there is nothing to
        drain through (nats-py raises), so just close."""
        if self._nc.is_closed:
            return
        if self._nc.is_reconnecting:
            await self.close()
            return
        await self._nc.drain()

    async def close(self) -> None:
        """Never raises: a client whose server went away can fail writing its goodbye
        (nats-py then raises from a closed transport), which must not crash shutdown."""
        if not self._nc.is_closed:
            try:
                await self._nc.close()
            except Exception:
                log.debug("closing the NATS client failed", exc_info=True)

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self._nc.stats)
