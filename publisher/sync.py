"""SyncPublisher: the async publisher driven from a private event-loop thread.

For code that has no event loop (threads, Django views, Celery tasks). Every method of
the async API is available with the same arguments and blocks until done. After
`fork()` (Celery prefork, gunicorn) the child has no loop thread and must not share
the parent's NATS socket, so a child reconnects by itself on first use.

`broadcast` and `blast` need no answer, so they do not wait for the loop thread:
they are validated and encoded in the caller's thread (caller mistakes raise there,
before anything is sent) and handed over through a FIFO outbox that the loop thread
drains in batches. Every blocking call drains the outbox first, so a broadcast
followed by a leave keeps its order. A transport failure while draining is logged,
counted, and raised by the next blocking call (`flush()` is one).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

from publisher.client import Publisher
from shared.errors import PublisherClosed, TransportError

log = logging.getLogger(__name__)

_instances: weakref.WeakSet[SyncPublisher] = weakref.WeakSet()


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

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class SyncPublisher:
    """`SyncPublisher("nats://…", prefix=…)` takes the keyword arguments of
    `Publisher.connect`; `sync_pub.sockets.join(sid, "lobby")` blocks until applied."""

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        call_timeout_s: float | None = 30.0,
        **connect_kwargs: Any,
    ) -> None:
        self._servers = servers
        self._kwargs = connect_kwargs
        self._timeout = call_timeout_s
        self._lock = threading.Lock()
        self._thread: _LoopThread | None = None
        self._pub: Publisher | None = None
        self._closed = False
        self._outbox: collections.deque[tuple[str, bytes, str]] = collections.deque()
        self._outbox_lock = threading.Lock()
        self._drain_scheduled = False
        self._drain_lock: asyncio.Lock | None = None
        self._async_error: BaseException | None = None
        self._drain_tasks: set[asyncio.Future[None]] = set()
        self.sockets: Any = _SyncSockets(self, lambda p: p.sockets)
        _instances.add(self)
        self._ensure()  # connect now: configuration errors surface at construction

    @classmethod
    def connect(
        cls, servers: str | Sequence[str] = "nats://127.0.0.1:4222", **kw: Any
    ) -> SyncPublisher:
        """Same as the constructor; mirrors `Publisher.connect`."""
        return cls(servers, **kw)

    def _ensure(self) -> tuple[_LoopThread, Publisher]:
        if self._closed:
            raise PublisherClosed("this publisher was closed")
        with self._lock:
            if self._thread is None or self._thread.pid != os.getpid():
                self._thread = _LoopThread()
                self._pub = None
            if self._pub is None:
                self._pub = self._thread.run(
                    Publisher.connect(self._servers, **self._kwargs), self._timeout
                )
            return self._thread, self._pub

    def call(self, fn: Callable[[Publisher], Coroutine[Any, Any, Any]]) -> Any:
        """Run `fn(async_publisher)` on the loop thread, after everything in the outbox,
        and return its result."""
        thread, pub = self._ensure()

        async def in_order() -> Any:
            await self._drain(pub)
            return await fn(pub)

        result = thread.run(in_order(), self._timeout)
        self._raise_async_error()
        return result

    # -- fire-and-forget publishing ---------------------------------------------------
    def send(self, items: list[tuple[str, bytes]], kind: str) -> None:
        """Queue encoded messages for the loop thread without waiting for it."""
        thread, pub = self._ensure()
        self._raise_async_error()
        with self._outbox_lock:
            self._outbox.extend((subject, body, kind) for subject, body in items)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        thread.loop.call_soon_threadsafe(self._schedule_drain, pub)

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
                for subject, body, kind in batch:
                    try:
                        await pub.publish_raw(subject, body, kind)
                    except Exception as exc:
                        log.error("queued %s could not be published: %s", kind, exc)
                        self._async_error = exc

    def _raise_async_error(self) -> None:
        exc, self._async_error = self._async_error, None
        if exc is not None:
            raise TransportError(f"an earlier queued publish failed: {exc}") from exc

    def model(self, identity: str) -> Any:
        return _SyncProxy(self, lambda p: p.model(identity))

    def flush(self, timeout: float = 5.0) -> None:
        self.call(lambda p: p.flush(timeout))

    @property
    def subjects(self) -> Any:
        return self._ensure()[1].subjects

    def close(self) -> None:
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

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._outbox_lock = threading.Lock()
        self._outbox.clear()  # the parent publishes its own queued messages
        self._drain_scheduled = False
        self._drain_lock = None
        self._thread = None
        self._pub = None

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _SyncProxy:
    """Blocking view of an async API object, resolved afresh for each call (a forked
    child gets a new async publisher behind the same proxy)."""

    def __init__(self, owner: SyncPublisher, resolve: Callable[[Publisher], Any]) -> None:
        self._owner = owner
        self._resolve = resolve

    def __getattr__(self, name: str) -> Any:
        _, pub = self._owner._ensure()
        attr = getattr(self._resolve(pub), name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._owner.call(lambda p: getattr(self._resolve(p), name)(*args, **kwargs))

        blocking.__name__ = name
        blocking.__doc__ = attr.__doc__
        return blocking


class _SyncSockets(_SyncProxy):
    """`sync_pub.sockets`: blocking verbs, plus broadcast/blast that only queue."""

    def broadcast(self, *args: Any, **kwargs: Any) -> None:
        _, pub = self._owner._ensure()
        self._owner.send(pub.sockets.prepare_broadcast(*args, **kwargs), "broadcast")

    def blast(self, *args: Any, **kwargs: Any) -> None:
        _, pub = self._owner._ensure()
        self._owner.send(pub.sockets.prepare_blast(*args, **kwargs), "blast")


def _after_fork_in_child() -> None:
    for inst in list(_instances):
        inst._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
