"""`RouterService`: a router answering on one publisher's NATS connection — the
workers' queue groups for virtual requests and connection hooks, bounded concurrency,
and a stop that leaves the groups and finishes what it took."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Protocol

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from publisher.router.hooks import ConnectCheck, Connected, Disconnected
from publisher.router.request import phrase
from shared.client_events import (
    EventAnswer,
    SocketEvent,
    decode_socket_event,
    encode_event_answer,
)
from shared.envelope import encode_reply
from shared.errors import MalformedEnvelope, NotSerializable, UsageError
from shared.vrequest import (
    ConnectAnswer,
    ConnectNotice,
    DisconnectNotice,
    VirtualRequest,
    VirtualResponse,
    decode_after_connect,
    decode_connect_question,
    decode_disconnect,
    decode_vrequest,
    encode_connect_answer,
    encode_vresponse,
)

if TYPE_CHECKING:
    from publisher.client import Publisher

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT_S: Final = 10.0


class Answers(Protocol):
    """What the service needs of a router (`publisher.router.Router`, or the ASGI
    bridge `publisher.asgi.AsgiBridge`)."""

    @property
    def queue(self) -> str: ...
    @property
    def max_concurrency(self) -> int: ...
    @property
    def answers_requests(self) -> bool: ...
    @property
    def event_names(self) -> tuple[str, ...]: ...
    @property
    def answers_connect(self) -> bool: ...
    @property
    def hears_disconnect(self) -> bool: ...
    @property
    def hears_connect(self) -> bool: ...

    async def dispatch(self, vreq: VirtualRequest, pub: Publisher) -> VirtualResponse: ...
    async def handle_event(self, ev: SocketEvent, pub: Publisher) -> EventAnswer: ...
    async def check_connect(self, check: ConnectCheck) -> ConnectAnswer: ...
    async def notify_disconnect(self, gone: Disconnected) -> None: ...
    async def notify_connect(self, came: Connected) -> None: ...


class RouterService:
    """A router answering on one publisher's NATS connection."""

    def __init__(self, router: Answers, pub: Publisher) -> None:
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
        if r.answers_requests:
            self._subs.append(await nc.subscribe(s.virtual_requests, q, cb=self._on_vreq))
        for name in r.event_names:  # "*": every client event (the ASGI bridge's option)
            subject = s.client_events if name == "*" else s.client_event(name)
            self._subs.append(await nc.subscribe(subject, q, cb=self._on_event))
        if r.answers_connect:
            self._subs.append(await nc.subscribe(s.hook_connect, q, cb=self._on_connect))
        if r.hears_disconnect:
            self._subs.append(await nc.subscribe(s.hook_disconnect, q, cb=self._on_disconnect))
        if r.hears_connect:
            self._subs.append(await nc.subscribe(s.hook_after_connect, q, cb=self._on_connected))
        if not self._subs:
            raise UsageError("the router has no route, event or hook: nothing to serve")
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
            body = encode_vresponse(VirtualResponse(500, {}, phrase(500)))
        if len(body) > self.pub.nats.max_payload:
            log.error(
                "%s %s: answer of %d bytes exceeds NATS max_payload",
                vreq.method.upper(),
                vreq.url,
                len(body),
            )
            body = encode_vresponse(VirtualResponse(500, {}, phrase(500)))
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

    async def _on_event(self, msg: Msg) -> None:
        await self._spawn(self._answer_event(msg))

    async def _answer_event(self, msg: Msg) -> None:
        try:
            ev = decode_socket_event(msg.data)
        except MalformedEnvelope as exc:
            log.warning("ignored a malformed client event: %s", exc)
            answer = EventAnswer(error="bad_request", message=str(exc))
        else:
            answer = await self.router.handle_event(ev, self.pub)
        try:
            body = encode_event_answer(answer)
        except NotSerializable as exc:
            log.error("event answer: %s", exc)
            body = encode_event_answer(EventAnswer(error="failed", message="not JSON"))
        if len(body) > self.pub.nats.max_payload:
            log.error("event answer of %d bytes exceeds NATS max_payload", len(body))
            body = encode_event_answer(EventAnswer(error="failed", message="too large"))
        if msg.reply:
            await self.pub.nats.publish(msg.reply, body)
        self.handled += 1

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

    async def _on_connected(self, msg: Msg) -> None:
        await self._spawn(self._handle_connected(msg))

    async def _handle_connected(self, msg: Msg) -> None:
        try:
            notice: ConnectNotice = decode_after_connect(msg.data)
        except MalformedEnvelope as exc:
            log.warning("ignored a malformed after-connect notice: %s", exc)
            return
        came = Connected(
            notice.socket_id,
            notice.gateway_id,
            notice.user_id,
            notice.info,
            notice.rooms,
            notice.handshake,
            self.pub,
        )
        try:
            await self.router.notify_connect(came)
        except Exception:
            log.exception("after_connect failed for %s", notice.socket_id)


async def serve_until_stopped(
    service: RouterService,
    *,
    started: Callable[[], None] | None = None,
    handle_signals: bool = False,
) -> None:
    """Run a started service until cancelled (or, with `handle_signals`, until SIGTERM
    or SIGINT), then stop it: leave the queue groups and finish what was taken. One
    place for `Router.serve` and `AsgiBridge.serve`."""
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
