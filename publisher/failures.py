"""What a failed fire-and-forget message was, for its report (`FailedPublish`).

Both publishers report a message that failed after its call returned (the async one when
an outage hold gave up on a gateway, the SyncPublisher also for its queued ones); the
report names the message by kind, event and room, read back from the bytes we encoded."""

from __future__ import annotations

import time

import orjson

from shared.envelope import KIND_MULTI_ROOM, decode_data
from shared.errors import FailedPublish
from shared.subjects import room_name


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
