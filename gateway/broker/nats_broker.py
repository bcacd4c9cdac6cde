"""The production broker (gateway.broker.Broker) on nats-py.

nats-py normally gives every subscription its own queue and task. A gateway holds one
subscription per room and per socket, so that would cost a task per room and a queue
hop per message. `_DirectClient` instead hands each message on our subscriptions to the
broker's one handler, inline in the client's reader: no task, no queue, no `Msg` object,
and messages are handled in the order NATS delivered them, across subjects too.
Subscriptions are keyed by subject; the NATS subscription id stays in here.

Everything else nats-py offers still works on the same connection (`client`): request
inboxes, and JetStream (`broker.client.jetstream()`), whose subscriptions are ordinary
nats-py ones that `_process_msg` passes through untouched.
This is the only module that touches nats-py internals (pinned to 2.16.x).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any, Final

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from gateway.broker import BrokerEvent, EventListener, Handler
from gateway.logs import Throttled
from shared.config import NatsSettings
from shared.errors import GatewayTimeout, TransportError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""At start-up only; after that the client reconnects forever."""
READ_AHEAD_BYTES: Final = 8 * 1024 * 1024
"""What the NATS socket may be read ahead of the parser in one event-loop tick."""


def _widen_reads(nc: NatsClient) -> None:
    """Let one loop tick read up to READ_AHEAD_BYTES from NATS (issue 16 #3).

    nats-py reads through an asyncio StreamReader whose limit is 32 KiB: past 64 KiB
    buffered it pauses the socket until the next tick, and asyncio's own loop reads at
    most 256 KiB per tick anyway (uvloop reads until the socket is empty). While the
    gateway fans a burst out, every tick also runs the write callbacks of every socket
    being written to, so at ~256 KiB a tick the reader fell megabytes behind the server:
    the PONGs and the answers to the readiness round trip waited behind room messages,
    and the gateway left the server as hung. Reading what the kernel holds at once keeps
    the reader ahead; the deliveries themselves are paced (gateway.pacing)."""
    tcp = getattr(nc, "_transport", None)
    reader = getattr(tcp, "_io_reader", None)
    if reader is not None and hasattr(reader, "_limit"):
        reader._limit = READ_AHEAD_BYTES // 2  # paused past twice the limit
    transport = getattr(getattr(tcp, "_io_writer", None), "transport", None)
    if transport is not None and hasattr(transport, "max_size"):  # asyncio's TCP loop
        transport.max_size = READ_AHEAD_BYTES


class _LiteSub:
    """What nats-py's client needs of a subscription to resubscribe it after a
    reconnect, drain it and close: a nats-py Subscription costs ~4 KB (its own queue
    and iterator), and a gateway holds one per room and one per connected socket."""

    __slots__ = ("_conn", "_id", "_subject")

    _wait_for_msgs_task = None
    _message_iterator = None
    _pending_next_msgs_calls: dict[str, Any] = {}  # noqa: RUF012 - read-only, always empty
    _queue = ""  # not a queue-group subscription
    _max_msgs = 0  # no auto-unsubscribe
    _received = 0  # read on reconnect only when _max_msgs is set

    def __init__(self, conn: _DirectClient, sid: int, subject: str) -> None:
        self._conn = conn
        self._id = sid
        self._subject = subject

    async def _drain(self) -> None:
        try:
            await self._conn._send_unsubscribe(self._id)
            await self._conn.flush()
        finally:
            self._conn._remove_sub(self._id)


def _no_handler(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
    log.debug("message on %s before a handler was set", subject[:200])


class _DirectClient(NatsClient):
    def __init__(self) -> None:
        super().__init__()
        self.handler: Handler = _no_handler

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        sub: object = self._subs.get(sid)
        if sub.__class__ is not _LiteSub:  # nats-py's own: request inboxes, JetStream
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        try:
            self.handler(subject, reply, data, headers)  # the raw header block, unparsed
        except Exception:  # a bad message must never stop the reader
            log.exception("message handler failed on %s", subject[:200])


async def _ignore(event: BrokerEvent) -> None:
    return None


class NatsBroker:
    """The production broker. Reconnects forever; nats-py resubscribes on reconnect."""

    def __init__(self, nc: _DirectClient) -> None:
        self._nc = nc
        self._sids: dict[str, int] = {}
        """Subject → NATS subscription id, for what we subscribed."""
        self._listener: EventListener = _ignore

    @classmethod
    async def connect(cls, settings: NatsSettings, *, name: str) -> NatsBroker:
        nc = _DirectClient()
        broker: list[NatsBroker] = []

        async def disconnected() -> None:
            if broker:
                await broker[0]._listener(BrokerEvent.DISCONNECTED)

        async def reconnected() -> None:
            _widen_reads(nc)
            if broker:
                await broker[0]._listener(BrokerEvent.RECONNECTED)

        warnings = Throttled(log)

        async def error_cb(exc: Exception) -> None:
            # nats-py reports every failed reconnect attempt (each 0.5 s while a server
            # is away): one line per kind of error every few seconds is enough.
            warnings.warning(type(exc).__name__, "NATS client error: %s", exc)

        try:
            await asyncio.wait_for(
                nc.connect(
                    name=name,
                    error_cb=error_cb,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
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
        _widen_reads(nc)
        broker.append(cls(nc))
        return broker[0]

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def client(self) -> NatsClient:
        """The nats-py client underneath: for what the seam does not cover, such as
        JetStream (`broker.client.jetstream()`)."""
        return self._nc

    @property
    def subscriptions(self) -> int:
        return len(self._sids)

    def set_handler(self, handler: Handler) -> None:
        self._nc.handler = handler

    def set_listener(self, listener: EventListener) -> None:
        self._listener = listener

    async def subscribe(self, subject: str) -> None:
        """Subscribe; messages go to the handler inline (see the module docstring).
        Subjects come from shared.subjects, which only builds valid ones."""
        nc = self._nc
        if subject in self._sids:
            return
        if nc.is_closed or nc.is_draining:
            raise TransportError(f"NATS connection is closed; cannot subscribe to {subject[:120]}")
        nc._sid += 1
        sid: int = nc._sid
        sub = _LiteSub(nc, sid, subject)
        self._sids[subject] = sid
        nc._subs[sid] = sub  # type: ignore[assignment]  # duck-typed on purpose
        try:
            await nc._send_subscribe(sub)  # type: ignore[arg-type]
        except Exception as exc:
            self._forget(subject)
            raise TransportError(f"subscribe to {subject[:120]} failed: {exc}") from exc

    async def unsubscribe(self, subject: str) -> None:
        nc = self._nc
        sid = self._forget(subject)
        if sid is not None and not (nc.is_closed or nc.is_reconnecting or nc.is_draining):
            try:
                await nc._send_unsubscribe(sid)
            except Exception:
                log.debug("UNSUB of %s not sent", subject[:120], exc_info=True)

    def _forget(self, subject: str) -> int | None:
        sid = self._sids.pop(subject, None)
        if sid is not None:
            self._nc._subs.pop(sid, None)
        return sid

    async def publish(
        self,
        subject: str,
        data: bytes,
        reply: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            await self._nc.publish(
                subject, data, reply=reply, headers=dict(headers) if headers else None
            )
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
        self._sids.clear()
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
