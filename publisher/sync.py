"""SyncPublisher: the async publisher driven from a private event-loop thread.

For code that has no event loop (threads, Django views, Celery tasks). Every method of
the async API has a blocking twin with the same parameters, generated from the async
definition (`blocking`), so mypy checks the real signature. After `fork()` (Celery
prefork, gunicorn) the child has no loop thread and must not share the parent's NATS
socket, so a child reconnects by itself on first use.

Constructing one does not connect: a module that builds its publisher at import time
(a Django settings or views module) still imports while NATS is down. The first call
connects; if NATS cannot be reached it raises TransportError naming the server and the
cause, and the next call tries again. `SyncPublisher.connect(...)` (or `connect=True`)
connects at once instead. Configuration mistakes (prefix, server URL, options) raise
at construction either way.

`broadcast` and `blast` need no answer, so they do not wait for the loop thread:
they are validated and encoded in the caller's thread (caller mistakes raise there,
before anything is sent) and handed over through a FIFO outbox that the loop thread
drains in batches. Every blocking call drains the outbox first, so a broadcast
followed by a leave keeps its order.

Failures are never silent and never misattributed. Every message is reported once:
- While NATS is unreachable, `broadcast`/`blast` wait for their own message (nats-py
  buffers it, up to its 2 MiB reconnect buffer, or refuses it at once), so a refused
  message raises TransportError from the call that made it, as the async API does.
- A queued message that fails later (the connection dropped between the call and the
  publish, or nats-py refused it) is a `FailedPublish` naming its kind, event, room and
  cause. It is passed to `on_error` (if given; it runs on the publisher's thread: keep it
  short, and do not call this publisher's blocking methods from it), counted in
  `failed_total` (and `sailcast_publisher_errors_total` with a registry), logged (at most
  every FAILURE_LOG_INTERVAL_S), and raised by the next `flush()` (or `close()`) as one
  `PublishFailed` carrying the count since the last flush and the failed messages (the
  first MAX_KEPT_FAILURES of them).
- A queued broadcast to a history room is sent without waiting for its PubAck
  (publisher/pipeline.py); an ack that says it was not stored, or that does not come
  within `request_timeout_s`, is reported the same way, and `flush()` waits for them.
- No other call raises it: a broadcast, join or leave raises only for itself, and its own
  message is sent whatever failed before it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Concatenate, Final, Generic, ParamSpec, TypedDict, TypeVar, Unpack

from publisher.client import Publisher
from publisher.failures import MAX_KEPT_FAILURES as MAX_KEPT_FAILURES  # re-exported
from publisher.failures import FailureBook, failed_publish
from publisher.models.model import Model, ModelRooms
from publisher.models.planner import Planner
from publisher.models.registry import ModelRegistry, default_registry
from publisher.sockets import Outgoing, Sockets
from shared.config import NatsSettings, parse_servers
from shared.errors import (
    FailedPublish,
    PublisherClosed,
    PublishFailed,
    SailcastError,
    TransportError,
    UsageError,
)
from shared.subjects import Subjects

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")

DEFAULT_CALL_TIMEOUT_S: Final = 30.0
"""How long a blocking call waits for the loop thread (connecting included)."""
FAILURE_LOG_INTERVAL_S: Final = 5.0
"""A burst of failed queued messages (an outage) logs one line per interval, not one each."""

OnError = Callable[[FailedPublish], None]

_instances: weakref.WeakSet[SyncPublisher] = weakref.WeakSet()


class ConnectOptions(TypedDict, total=False):
    """The keyword arguments of `Publisher.connect` (defaults there); a test keeps the
    two in step."""

    prefix: str
    nats_settings: NatsSettings | None
    max_payload_bytes: int
    request_timeout_s: float
    registry: object
    name: str
    connect_timeout_s: float
    hold_timeout_s: float
    hold_max_bytes: int
    stored_window: int


class _LoopThread:
    """One event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="sailcast-publisher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(
        self, coro: Coroutine[Any, Any, T], timeout: float | None, *, cancel_late: bool = False
    ) -> T:
        """Run `coro` on the loop and wait; with `cancel_late`, one that outlives
        `timeout` is cancelled (a connect must not finish unseen and leak)."""
        if threading.get_ident() == self._thread.ident:
            coro.close()
            raise UsageError(
                "a SyncPublisher's blocking method was called on its own thread (from an "
                "on_error callback?): it would wait for itself"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            if cancel_late:
                future.cancel()
            raise

    def stop(self) -> None:
        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:  # a connect given up on may still be unwinding: let it finish first
            self.run(cancel_the_rest(), 5)
        except Exception:
            log.debug("tasks left on the publisher's loop did not finish", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class SyncPublisher:
    """`SyncPublisher("nats://…", prefix=…)` takes the keyword arguments of
    `Publisher.connect`; `sync_pub.sockets.join(sid, "lobby")` blocks until applied.
    It connects on first use (`connect=True`, or `SyncPublisher.connect(...)`: now).
    `on_error(failure)` hears of every queued message that failed (module docstring)."""

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        call_timeout_s: float | None = DEFAULT_CALL_TIMEOUT_S,
        connect: bool = False,
        on_error: OnError | None = None,
        **options: Unpack[ConnectOptions],
    ) -> None:
        # validate everything Publisher.connect would, without connecting
        bound = inspect.signature(Publisher.connect).bind(servers, **options)
        bound.apply_defaults()
        settings = bound.arguments["nats_settings"] or NatsSettings(servers=parse_servers(servers))
        self.subjects = Subjects(bound.arguments["prefix"])
        self._where = ", ".join(settings.describe()["servers"])
        self._servers = servers
        self._options = options
        self._timeout = call_timeout_s
        self._lock = threading.Lock()
        self._thread: _LoopThread | None = None
        self._pub: Publisher | None = None
        self._closed = False
        self._outbox: collections.deque[tuple[Outgoing, str]] = collections.deque()
        self._outbox_lock = threading.Lock()
        self._drain_scheduled = False
        self._drain_lock: asyncio.Lock | None = None
        self._drain_tasks: set[asyncio.Future[None]] = set()
        self._on_error = on_error
        self._failures_lock = threading.Lock()
        self._book = FailureBook()  # since the last flush
        self._failed_total = 0
        self._log_after = 0.0
        self.sockets = SyncSockets(self)
        """`pub.sockets`, blocking; `broadcast`/`blast` only queue."""
        _instances.add(self)
        if connect:
            self._ensure()

    @classmethod
    def connect(
        cls,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        call_timeout_s: float | None = DEFAULT_CALL_TIMEOUT_S,
        on_error: OnError | None = None,
        **options: Unpack[ConnectOptions],
    ) -> SyncPublisher:
        """Construct and connect now (TransportError here if NATS cannot be reached);
        mirrors `Publisher.connect`."""
        return cls(
            servers, call_timeout_s=call_timeout_s, connect=True, on_error=on_error, **options
        )

    @property
    def connected(self) -> bool:
        """Connected to NATS now (False before the first use)."""
        pub = self._pub
        return pub is not None and pub.connected

    @property
    def failed_total(self) -> int:
        """Queued messages that failed after their call returned, since construction
        (each one also went to `on_error` and to the next flush()'s PublishFailed)."""
        return self._failed_total

    def _ensure(self) -> tuple[_LoopThread, Publisher]:
        if self._closed:
            raise PublisherClosed("this publisher was closed")
        with self._lock:
            if self._thread is None or self._thread.pid != os.getpid():
                self._thread = _LoopThread()
                self._pub = None
            if self._pub is None:
                try:
                    self._pub = self._thread.run(
                        Publisher.connect(self._servers, on_error=self._report, **self._options),
                        self._timeout,
                        cancel_late=True,
                    )
                    self._pub.keeps_stored_failures = False  # we keep them (_report)
                except TransportError as exc:
                    raise TransportError(
                        f"{exc} (SyncPublisher connects on first use; it tries again on the "
                        "next call)"
                    ) from exc
                except TimeoutError as exc:
                    raise TransportError(
                        f"SyncPublisher could not connect to NATS at {self._where} within "
                        f"{self._timeout}s (it tries again on the next call)"
                    ) from exc
            return self._thread, self._pub

    def call(self, fn: Callable[[Publisher], Coroutine[Any, Any, T]]) -> T:
        """Run `fn(async_publisher)` on the loop thread, after everything in the outbox,
        and return its result (or raise its error: only its own)."""
        thread, pub = self._ensure()

        async def in_order() -> T:
            await self._drain(pub)
            return await fn(pub)

        return thread.run(in_order(), self._timeout)

    # -- fire-and-forget publishing ---------------------------------------------------
    def send(self, items: list[Outgoing], kind: str) -> None:
        """Queue encoded messages for the loop thread without waiting for it; while NATS
        is unreachable (or the gateways not back after it), publish them now instead, so
        that a refusal (the outage hold full) raises here."""
        thread, pub = self._ensure()
        if pub.holding:
            self._publish_now(thread, pub, items, kind)
            return
        with self._outbox_lock:
            self._outbox.extend((item, kind) for item in items)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        thread.loop.call_soon_threadsafe(self._schedule_drain, pub)

    def send_and_wait(self, items: list[Outgoing], kind: str) -> None:
        """`broadcast(..., wait_stored=True)`: publish after the outbox (order kept) and
        wait until the history rooms' copies are stored; TransportError here if not."""
        thread, pub = self._ensure()

        async def in_order() -> None:
            await self._drain(pub)
            acks = []
            for subject, body, headers in items:
                if headers is None:
                    await pub.publish_raw(subject, body, kind)
                else:
                    ack = await pub.publish_stored(subject, body, kind, headers, wait=True)
                    if ack is not None:
                        acks.append(ack)
            for result in await asyncio.gather(*acks, return_exceptions=True):
                if isinstance(result, BaseException):
                    raise result

        try:
            thread.run(in_order(), self._timeout)
        except TimeoutError as exc:
            raise TransportError(
                f"{kind} was not confirmed stored within {self._timeout}s (it may still be)"
            ) from exc

    def _publish_now(
        self, thread: _LoopThread, pub: Publisher, items: list[Outgoing], kind: str
    ) -> None:
        """After the outbox (order kept), hand `items` to nats-py and wait: it buffers or
        refuses at once when disconnected, so this costs one trip to the loop thread."""

        async def in_order() -> None:
            await self._drain(pub)
            for item in items:
                await _publish(pub, item, kind)

        try:
            thread.run(in_order(), self._timeout)
        except TimeoutError as exc:
            raise TransportError(
                f"{kind} was not handed to NATS within {self._timeout}s while disconnected "
                "(it may still be sent)"
            ) from exc

    def _schedule_drain(self, pub: Publisher) -> None:
        task = asyncio.ensure_future(self._drain(pub))
        self._drain_tasks.add(task)
        task.add_done_callback(self._drain_tasks.discard)

    async def _drain(self, pub: Publisher) -> None:
        if self._drain_lock is None:
            self._drain_lock = asyncio.Lock()
        async with self._drain_lock:
            while True:
                with self._outbox_lock:
                    if not self._outbox:
                        self._drain_scheduled = False
                        return
                    batch = list(self._outbox)
                    self._outbox.clear()
                for item, kind in batch:
                    try:
                        await _publish(pub, item, kind)
                    except Exception as exc:
                        self._failed(item[0], item[1], kind, exc)

    def _failed(self, subject: str, body: bytes, kind: str, exc: Exception) -> None:
        """Report one queued message that did not reach NATS (see the module docstring)."""
        self._report(failed_publish(subject, body, kind, exc))

    def _report(self, failure: FailedPublish) -> None:
        """Count, keep, log and pass on one failure: a queued message's, or one the async
        publisher reports (held through an outage, published unconfirmed)."""
        kind = failure.kind
        with self._failures_lock:
            self._failed_total += 1
        unflushed = self._book.add(failure)
        now = time.monotonic()
        if now >= self._log_after:
            self._log_after = now + FAILURE_LOG_INTERVAL_S
            log.error(
                "queued %s (%d failed since the last flush; logged at most every %ss): %s",
                kind,
                unflushed,
                FAILURE_LOG_INTERVAL_S,
                failure,
            )
        if self._on_error is not None:
            try:
                self._on_error(failure)
            except Exception:
                log.exception("the SyncPublisher's on_error callback raised")

    def _take_failures(self) -> PublishFailed | None:
        """The failures since the last flush, as one error; starts a new count."""
        return self._book.take()

    def model(self, identity: str, *, registry: ModelRegistry | None = None) -> SyncModel:
        """`pub.model(identity)`, blocking (see publisher.models)."""
        return SyncModel(self, identity, registry=registry)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until NATS has received everything published so far (queued too), and
        every history-room broadcast has its PubAck.

        Raises PublishFailed if queued messages failed since the last flush (with the
        NATS flush's own failure as its cause, if it failed too)."""
        flush_error: SailcastError | None = None
        try:
            self.call(lambda p: p.settle(timeout))  # its failures reach us via on_error
        except TransportError as exc:
            flush_error = exc
        failed = self._take_failures()
        if failed is not None:
            raise failed from flush_error
        if flush_error is not None:
            raise flush_error

    def close(self) -> None:
        """Publish what is queued, then disconnect; raises PublishFailed (once closed) if
        queued messages failed since the last flush."""
        if self._closed:
            return
        with self._lock:
            thread, pub = self._thread, self._pub
            self._closed = True
            self._thread = self._pub = None
        if thread is not None and thread.pid == os.getpid():
            if pub is not None:

                async def drain_and_close(p: Publisher) -> None:
                    await self._drain(p)
                    await p.close()

                try:
                    thread.run(drain_and_close(pub), 10)
                finally:
                    thread.stop()
            else:
                thread.stop()
        failed = self._take_failures()
        if failed is not None:
            raise failed

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._outbox_lock = threading.Lock()
        self._outbox.clear()  # the parent publishes its own queued messages
        self._drain_scheduled = False
        self._drain_lock = None
        self._thread = None
        self._pub = None
        self._failures_lock = threading.Lock()  # the parent reports its own failures
        self._book = FailureBook()
        self._failed_total = 0

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.close()
        except PublishFailed as failed:
            if e is None:
                raise
            # the exception leaving the block is the one to see; this one is logged
            log.error("%s (not raised: %s is propagating)", failed, type(e).__name__)


# -- the blocking twins -------------------------------------------------------------------
class SyncView(Generic[A]):
    """A blocking view of one async API object (`A`), resolved afresh from the owner's
    publisher for each call: a forked child gets a new publisher behind the same view."""

    def __init__(self, owner: SyncPublisher) -> None:
        self._owner = owner

    def _target(self, pub: Publisher) -> A:
        raise NotImplementedError

    def _call(self, fn: Callable[[A], Coroutine[Any, Any, T]]) -> T:
        return self._owner.call(lambda pub: fn(self._target(pub)))


def blocking(
    method: Callable[Concatenate[A, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncView[A], P], T]:
    """The blocking twin of an async method: same parameters (mypy sees them), runs on
    the loop thread after the outbox, returns its result."""

    def call(self: SyncView[A], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(lambda target: method(target, *args, **kwargs))

    functools.update_wrapper(call, method)
    return call


async def _publish(pub: Publisher, item: Outgoing, kind: str) -> None:
    """One prepared message: core, or stored through JetStream (sent in outbox order,
    its PubAck checked in the background: publisher/pipeline.py)."""
    subject, body, headers = item
    if headers is None:
        await pub.publish_raw(subject, body, kind)
    else:
        await pub.publish_stored(subject, body, kind, headers)


def queued(
    prepare: Callable[Concatenate[Sockets, P], list[Outgoing]], kind: str
) -> Callable[Concatenate[SyncSockets, P], None]:
    """A fire-and-forget verb: `prepare` validates and encodes in the caller's thread,
    the result joins the outbox; nothing waits for the loop thread."""

    def send(self: SyncSockets, /, *args: P.args, **kwargs: P.kwargs) -> None:
        _, pub = self._owner._ensure()
        items = prepare(pub.sockets, *args, **kwargs)
        if kwargs.get("wait_stored"):
            self._owner.send_and_wait(items, kind)
        else:
            self._owner.send(items, kind)

    functools.update_wrapper(send, prepare)  # its signature, for help() and inspect
    send.__name__ = send.__qualname__ = kind
    send.__doc__ = (
        f"Queue a {kind} (arguments of `Sockets.{kind}`): validated and encoded here, so "
        "a mistake raises at once; published by the loop thread in call order. With "
        "wait_stored=True, blocks until its history-room copies are confirmed stored."
    )
    return send


class SyncSockets(SyncView[Sockets]):
    """`sync_pub.sockets`: the verbs of `publisher.sockets.Sockets`, blocking, except
    `broadcast` and `blast`, which only queue."""

    def _target(self, pub: Publisher) -> Sockets:
        return pub.sockets

    join = blocking(Sockets.join)
    leave = blocking(Sockets.leave)
    rooms = blocking(Sockets.rooms)
    disconnect = blocking(Sockets.disconnect)
    add_room_members_to_rooms = blocking(Sockets.add_room_members_to_rooms)
    remove_room_members_from_rooms = blocking(Sockets.remove_room_members_from_rooms)
    leave_all = blocking(Sockets.leave_all)
    broadcast = queued(Sockets.prepare_broadcast, "broadcast")
    blast = queued(Sockets.prepare_blast, "blast")
    broadcast_to_user = queued(Sockets.prepare_broadcast_to_user, "broadcast")
    broadcast_to_user.__name__ = broadcast_to_user.__qualname__ = "broadcast_to_user"


class SyncModel(ModelRooms, SyncView[Model]):
    """`sync_pub.model("user")`: every verb of `publisher.models.Model`, blocking. Room
    names need no connection."""

    def __init__(
        self, owner: SyncPublisher, identity: str, *, registry: ModelRegistry | None = None
    ) -> None:
        super().__init__(owner)
        self._registry = registry or default_registry
        self.plan = Planner(self._registry, identity)
        self.identity = self.plan.identity

    def _target(self, pub: Publisher) -> Model:
        return Model(pub, self.identity, registry=self._registry)

    run = blocking(Model.run)
    subscribe = blocking(Model.subscribe)
    unsubscribe = blocking(Model.unsubscribe)
    publish = blocking(Model.publish)
    watch = blocking(Model.watch)
    unwatch = blocking(Model.unwatch)
    introduce = blocking(Model.introduce)
    retire = blocking(Model.retire)
    publish_create = blocking(Model.publish_create)
    publish_update = blocking(Model.publish_update)
    publish_destroy = blocking(Model.publish_destroy)
    publish_add = blocking(Model.publish_add)
    publish_remove = blocking(Model.publish_remove)
    message = blocking(Model.message)
    after_find = blocking(Model.after_find)
    after_find_one = blocking(Model.after_find_one)
    after_populate = after_find_one
    after_create = blocking(Model.after_create)
    after_update = blocking(Model.after_update)
    after_destroy = blocking(Model.after_destroy)
    after_add = blocking(Model.after_add)
    after_remove = blocking(Model.after_remove)
    after_replace = blocking(Model.after_replace)


def _after_fork_in_child() -> None:
    for inst in list(_instances):
        inst._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
