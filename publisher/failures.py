"""What a failed fire-and-forget message was, for its report (`FailedPublish`).

Both publishers report a message that failed after its call returned (the async one when
an outage hold gave up on a gateway, the SyncPublisher also for its queued ones); the
report names the message by kind, event and room, read back from the bytes we encoded."""

from __future__ import annotations

import threading
import time
from typing import Final

import orjson

from shared.envelope import KIND_MULTI_ROOM, decode_data
from shared.errors import FailedPublish, PublishFailed
from shared.subjects import room_name

MAX_KEPT_FAILURES: Final = 1000
"""Failed messages kept for the next flush() (all are counted)."""


class FailureBook:
    """The failures since the last flush, raised by it as one PublishFailed: the count
    (exact) and the first MAX_KEPT_FAILURES of them. Thread-safe (a SyncPublisher adds
    on its loop thread and takes in the caller's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[FailedPublish] = []
        self._count = 0

    def add(self, failure: FailedPublish) -> int:
        """Keep one failure; returns how many since the last `take`."""
        with self._lock:
            self._count += 1
            if len(self._failures) < MAX_KEPT_FAILURES:
                self._failures.append(failure)
            return self._count

    @property
    def count(self) -> int:
        """Failures since the last `take` (read without the lock: a hint)."""
        return self._count

    def take(self) -> PublishFailed | None:
        """The failures since the last take, as one error (None if none); starts anew."""
        with self._lock:
            count, failures = self._count, self._failures
            self._count, self._failures = 0, []
        return PublishFailed(count, failures) if count else None


def failed_publish(subject: str, body: bytes, kind: str, error: Exception) -> FailedPublish:
    """The report of one message (`body`, published on `subject`) that failed."""
    return FailedPublish(kind, _event_of(body), _room_of(subject, body, kind), error, time.time())


def _event_of(body: bytes) -> str:
    try:
        return str(orjson.loads(decode_data(body).args)[0])
    except Exception:  # we encoded it: cannot happen, but a report must not fail
        return "?"


def _room_of(subject: str, body: bytes, kind: str) -> str | None:
    """The room of a broadcast: from its subject (`<prefix>.r.<token>`, see
    shared.subjects), or, for one message to many rooms (`<prefix>.mr`), the rooms its
    envelope lists, comma-separated."""
    if kind != "broadcast":
        return None
    try:
        msg = decode_data(body)
        if msg.kind == KIND_MULTI_ROOM:
            return ", ".join(msg.rooms)
        return room_name(subject.rsplit(".", 1)[-1])
    except Exception:  # as above
        return subject
