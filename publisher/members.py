"""Who is in a room, cluster-wide: members (paged), counts, a user's sockets.

The gateways holding a room are read from the room directory (shared/directory.py) in
ONE Direct Get (`multi_last` over the room's entries); each holder is then asked on its
own subject (`<p>.gw.id.<id>`), all in parallel, and the room named after a socket id
on that socket's subject (own-id rooms are not in the directory). A holder with no
responder has gone (NATS dropped its subscriptions with its connection): its entry is
skipped. A holder that does not answer in time makes the call raise GatewayTimeout
naming it, unless the caller passed `partial=True`: then the result lists it in
`missing`. Without JetStream (no directory), every gateway is found with a ping on
`gw.all` (`ask_all_gateways`' completion rule) and asked the same way.

Pages go in (gateway id, socket id) order; the cursor (shared.directory) is the last
member handed out, so a member present for the whole paging is neither skipped nor
repeated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from publisher.stats import PublisherStats
from shared.control import (
    MAX_MEMBERS_LIMIT,
    Applied,
    ClusterRequest,
    Count,
    CountOf,
    Member,
    Members,
    MembersOf,
    Ping,
    Refused,
    decode_reply,
    encode_request,
)
from shared.directory import (
    Position,
    decode_cursor,
    directory_stream,
    encode_cursor,
    gateway_of,
    holders_filter,
)
from shared.errors import GatewayTimeout, MalformedEnvelope, TransportError, UsageError
from shared.subjects import Subjects

log = logging.getLogger(__name__)

DEFAULT_PAGE: Final = 1000
MAX_HOLDERS: Final = 1024
"""Entries one directory read returns at most (JetStream's `multi_last` bound)."""
_STATUS: Final = "Status"
_EOB: Final = "204"
_NOT_FOUND: Final = "404"
_NO_RESPONDERS: Final = "503"


@dataclass(frozen=True, slots=True)
class MembersPage:
    """One page of a room's members, in (gateway, socket id) order. `cursor`: pass it
    back for the next page (None: this was the last). `missing`: gateways that did not
    answer in time (only with `partial=True`; their members are not in this page)."""

    members: list[Member]
    cursor: str | None
    missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RoomCount:
    """A room's members (`sockets`) and distinct user ids (`users`) on every gateway;
    `missing` as in MembersPage."""

    sockets: int
    users: int
    missing: tuple[str, ...] = ()


@dataclass(slots=True)
class _Answers:
    by_gateway: dict[str, MembersOf | CountOf] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)


AskAll = Callable[[ClusterRequest], Awaitable[list[Applied]]]


def merge_page(
    replies: Mapping[str, MembersOf], after: Position | None, limit: int
) -> tuple[list[Member], Position | None]:
    """The next page from the gateways' answers: members after `after` in (gateway,
    socket id) order, at most `limit`, and where the page stopped (None: nothing
    follows). A gateway with members left (unsent, or beyond the page) ends the page
    there: its next members come before any later gateway's."""
    page: list[Member] = []
    last: Position | None = None
    for gw in sorted(replies):
        reply = replies[gw]
        fresh = [m for m in reply.members if after is None or Position(gw, m.socket_id) > after]
        room_left = limit - len(page)
        taken = fresh[:room_left]
        if taken:
            page.extend(taken)
            last = Position(gw, taken[-1].socket_id)
        if len(fresh) > room_left or (reply.more and fresh):
            return page, last
    return page, None


class RoomQueries:
    """The reading side of presence, on the publisher's NATS connection."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        *,
        timeout_s: float,
        stats: PublisherStats,
        ask_all: AskAll,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._timeout_s = timeout_s
        self._stats = stats
        self._ask_all = ask_all
        self._direct_get = f"$JS.API.DIRECT.GET.{directory_stream(subjects.prefix)}"

    async def members(
        self, room: str, *, cursor: str | None, limit: int, partial: bool
    ) -> MembersPage:
        if type(limit) is not int or not 1 <= limit <= MAX_MEMBERS_LIMIT:
            raise UsageError(
                f"limit must be an integer from 1 to {MAX_MEMBERS_LIMIT}, got {limit!r}"
            )
        after = decode_cursor(cursor) if cursor is not None else None
        started = time.perf_counter()

        def request(gw: str | None) -> Members | None:
            if gw is None:  # the socket subject: its gateway is known from its answer
                return Members(room, None, MAX_MEMBERS_LIMIT)
            if after is None or gw > after.gateway_id:
                return Members(room, None, limit)
            if gw == after.gateway_id:
                return Members(room, after.socket_id, limit)
            return None  # paged past it

        answers = await self._gather("members", room, request, partial, started)
        replies = {gw: r for gw, r in answers.by_gateway.items() if isinstance(r, MembersOf)}
        page, last = merge_page(replies, after, limit)
        missing = tuple(sorted(answers.missing))
        self._stats.presence("members", "partial" if missing else "ok", started)
        return MembersPage(page, encode_cursor(last) if last is not None else None, missing)

    async def count(self, room: str, *, partial: bool) -> RoomCount:
        started = time.perf_counter()
        answers = await self._gather("count", room, lambda gw: Count(room), partial, started)
        sockets = 0
        users: set[str] = set()
        for reply in answers.by_gateway.values():
            assert isinstance(reply, CountOf)
            sockets += reply.sockets
            users.update(reply.users)
        missing = tuple(sorted(answers.missing))
        self._stats.presence("count", "partial" if missing else "ok", started)
        return RoomCount(sockets, len(users), missing)

    # -- asking the holders ----------------------------------------------------------
    async def _gather(
        self,
        kind: str,
        room: str,
        request: Callable[[str | None], Members | Count | None],
        partial: bool,
        started: float,
    ) -> _Answers:
        holders = await self.holders(room)
        if holders is None:  # no directory (no JetStream): every gateway
            self._stats.presence_fallback()
            holders = sorted({a.gw for a in await self._ask_all(Ping())})
        out = _Answers()
        asks: list[tuple[str | None, Members | Count]] = []
        for gw in holders:
            req = request(gw)
            if req is not None:
                asks.append((gw, req))
        socket_req = request(None)
        assert socket_req is not None
        asks.append((None, socket_req))
        replies = await asyncio.gather(*(self._ask(gw, room, req) for gw, req in asks))
        for (asked, _), reply in zip(asks, replies, strict=True):
            if reply is None:
                continue  # gone (no responder): holds nothing any more
            if isinstance(reply, str):
                out.missing.add(reply)
            elif asked is not None or reply.gw not in out.by_gateway:
                out.by_gateway[reply.gw] = reply
        if out.missing and not partial:
            self._stats.presence(kind, "timeout", started)
            raise GatewayTimeout(
                f"{kind} of {room[:80]!r}: gateway(s) {', '.join(sorted(out.missing))} did not "
                f"answer within {self._timeout_s}s (pass partial=True to get the others' answer)"
            )
        return out

    async def _ask(
        self, gw: str | None, room: str, req: Members | Count
    ) -> MembersOf | CountOf | str | None:
        """One gateway's answer; None when nothing answers there (gone, or for a socket
        subject: no such socket); the gateway's id (or the room) when it timed out."""
        subject = self._subjects.gateway(gw) if gw is not None else self._subjects.socket(room)
        try:
            msg = await self._nc.request(subject, encode_request(req), timeout=self._timeout_s)
        except NoRespondersError:
            return None
        except NatsTimeoutError:
            return gw if gw is not None else f"(gateway of socket {room[:40]})"
        except Exception as exc:
            raise TransportError(f"{req.kind.value} of {room[:80]!r} failed: {exc}") from exc
        try:
            reply: MembersOf | CountOf | Refused = (
                decode_reply(msg.data, MembersOf)
                if isinstance(req, Members)
                else decode_reply(msg.data, CountOf)
            )
        except MalformedEnvelope as exc:
            raise TransportError(f"a malformed {req.kind.value} answer from {gw}: {exc}") from exc
        if isinstance(reply, Refused):
            if gw is None:  # the socket is not there (any more)
                return None
            raise TransportError(
                f"gateway {gw} refused {req.kind.value}: {reply.message or reply.error.value} "
                "(an older gateway?)"
            )
        return reply

    async def holders(self, room: str) -> list[str] | None:
        """The gateways with an entry for `room`, sorted; None when there is no
        directory (no JetStream, or no gateway made the stream)."""
        body = orjson.dumps(
            {"multi_last": [holders_filter(self._subjects.prefix, room)], "batch": MAX_HOLDERS}
        )
        nc = self._nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        found: set[str] = set()
        try:
            await nc.publish(self._direct_get, body, reply=inbox)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout_s
            while True:
                try:
                    msg = await sub.next_msg(timeout=max(0.001, deadline - loop.time()))
                except NatsTimeoutError as exc:
                    raise GatewayTimeout(
                        f"the room directory did not answer within {self._timeout_s}s"
                    ) from exc
                headers = msg.headers or {}
                status = headers.get(_STATUS, "")
                if status in (_EOB, _NOT_FOUND):
                    break
                if status == _NO_RESPONDERS:
                    return None
                if status:
                    raise TransportError(
                        f"room directory read: {status} {headers.get('Description', '')}"
                    )
                gw = gateway_of(headers.get("Nats-Subject", ""))
                if gw is not None and msg.data:  # an empty body: not an entry
                    found.add(gw)
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                log.debug("inbox unsubscribe failed", exc_info=True)
        return sorted(found)


__all__ = ["DEFAULT_PAGE", "MembersPage", "RoomCount", "RoomQueries"]
