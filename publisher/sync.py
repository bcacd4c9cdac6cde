"""SyncPublisher: the async publisher driven from a private event-loop thread.

For code that has no event loop (threads, Django views, Celery tasks). Every method of
the async API is available with the same arguments and blocks until done. After
`fork()` (Celery prefork, gunicorn) the child has no loop thread and must not share
the parent's NATS socket, so a child reconnects by itself on first use.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

from publisher.client import Publisher
from shared.errors import PublisherClosed

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
        self.sockets: Any = _SyncProxy(self, lambda p: p.sockets)
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
        """Run `fn(async_publisher)` on the loop thread and return its result."""
        thread, pub = self._ensure()
        return thread.run(fn(pub), self._timeout)

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
                try:
                    thread.run(pub.close(), 10)
                finally:
                    thread.stop()
            else:
                thread.stop()

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()
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


def _after_fork_in_child() -> None:
    for inst in list(_instances):
        inst._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
