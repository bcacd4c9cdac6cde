"""Batched Direct Get: a room's stored messages after a position, in one request.

nats-py's `js.get_msg(direct=True)` fetches one message per request. nats-server (2.11+)
answers `$JS.API.DIRECT.GET.<stream>` with `{"seq", "next_by_subj", "batch",
"max_bytes"}` by sending up to `batch` messages of that subject from `seq` on, each as its
own reply (stored payload, original headers plus `Nats-Sequence`, `Nats-Time-Stamp`,
`Nats-Num-Pending`), then an end-of-batch status `204 EOB`; `404` when there is nothing
at or after `seq`. Direct gets may be answered by any replica, so a just-stored message
can be missing from the answer: callers treat a short answer as "not yet", not as loss.
Uses nats-py's public API only (a subscription on a fresh inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import orjson
from nats.aio.client import Client as NatsClient

from shared.errors import TransportError

DIRECT_GET_TIMEOUT_S: Final = 2.0
"""The whole batch, first reply to end-of-batch."""
_STATUS: Final = "Status"
_EOB: Final = "204"
_NOT_FOUND: Final = "404"


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored message of a room: its stream position, envelope and store time."""

    seq: int
    data: bytes
    time_s: float
    """Unix time the stream stored it (`Nats-Time-Stamp`)."""


@dataclass(frozen=True, slots=True)
class Page:
    """What one batched get returned, in position order."""

    messages: list[Stored]
    pending: int
    """Messages of the subject left after this page (0: the page reached the end)."""


def parse_timestamp(value: str) -> float:
    """`2026-12-03T16:35:20.123456789Z` (RFC 3339, nanoseconds) → Unix seconds."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if dot:  # fromisoformat takes at most microseconds
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    return datetime.fromisoformat(text).timestamp()


class DirectGet:
    """Batched reads of one stream, on an existing nats-py connection."""

    def __init__(self, nc: NatsClient, stream: str, *, timeout_s: float = DIRECT_GET_TIMEOUT_S):
        self._nc = nc
        self._stream = stream
        self._api = f"$JS.API.DIRECT.GET.{stream}"
        self._timeout_s = timeout_s

    async def after(self, subject: str, seq: int, *, batch: int, max_bytes: int) -> Page:
        """Up to `batch` messages of `subject` with a position > `seq` (and within
        `max_bytes`, at least one). Raises TransportError when the stream does not
        answer in time or answers with an error."""
        body = orjson.dumps(
            {"seq": seq + 1, "next_by_subj": subject, "batch": batch, "max_bytes": max_bytes}
        )
        nc = self._nc
        inbox = nc.new_inbox()
        try:
            sub = await nc.subscribe(inbox)
        except Exception as exc:
            raise TransportError(f"direct get of {subject[:120]}: {exc}") from exc
        messages: list[Stored] = []
        pending = 0
        try:
            await nc.publish(self._api, body, reply=inbox)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout_s
            while True:
                msg = await sub.next_msg(timeout=max(0.001, deadline - loop.time()))
                headers = msg.headers or {}
                status = headers.get(_STATUS, "")
                if status == _EOB:
                    pending = int(headers.get("Nats-Num-Pending", "0") or 0)
                    break
                if status == _NOT_FOUND:
                    break
                if status:
                    detail = headers.get("Description", "")
                    raise TransportError(f"direct get of {subject[:120]}: {status} {detail}")
                messages.append(
                    Stored(
                        int(headers["Nats-Sequence"]),
                        msg.data,
                        parse_timestamp(headers.get("Nats-Time-Stamp", "1970-01-01T00:00:00Z")),
                    )
                )
                if len(messages) >= batch:  # the EOB follows; do not wait for it
                    pending = int(headers.get("Nats-Num-Pending", "0") or 0)
                    break
        except TransportError:
            raise
        except Exception as exc:  # nats-py's timeout, a closed connection
            raise TransportError(f"direct get of {subject[:120]} failed: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):  # closed connection: nothing to undo
                await sub.unsubscribe()
        return Page(messages, pending)

    async def last_seq(self) -> int:
        """The stream's last position now (its state, one request)."""
        try:
            info = await self._nc.jetstream().stream_info(self._stream)
        except Exception as exc:
            raise TransportError(f"history stream {self._stream} state: {exc!r}") from exc
        return int(info.state.last_seq or 0)


__all__ = ["DIRECT_GET_TIMEOUT_S", "DirectGet", "Page", "Stored", "parse_timestamp"]
