"""Who is in a room, cluster-wide: members (paged), counts, a user's sockets.

The gateways holding a room are read from the room directory (shared/directory.py) in
ONE Direct Get (`multi_last` over the room's entries); each holder is then asked on its
own subject (`<p>.gw.id.<id>`) — for a count all in parallel, for a members page in
cursor order, each for what the page still lacks (`walk_page`) —, and the room named
after a socket id on that socket's subject (own-id rooms are not in the directory). A holder with no
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NoReturn

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


AskMembers = Callable[[str, Members], Awaitable[MembersOf | str | None]]
"""One holder's answer to a members request: None when it is gone (no responder), its
id when it did not answer in time."""


@dataclass(frozen=True, slots=True)
class _Walk:
    members: list[Member]
    last: Position | None
    missing: tuple[str, ...]


async def walk_page(
    room: str,
    holders: Sequence[str],
    after: Position | None,
    limit: int,
    ask: AskMembers,
    *,
    partial: bool,
    answered: Mapping[str, MembersOf] | None = None,
) -> _Walk:
    """The next page, asking the holders in cursor order, each for what the page still
    lacks, so a listing moves each member about once. The walk stops at a holder with
    members left (beyond the page, or cut by its answer's size: `more`); `last` is then
    where the page stopped (None: nothing follows). A full page with holders still
    ahead stops at its last member (the next page may then be empty). `answered`:
    answers already in hand (the socket subject's), used in place of asking. A holder
    that does not answer ends the walk unless `partial` (then it is skipped, and
    listed in `missing`)."""
    have = dict(answered or {})
    order = sorted(set(holders) | set(have))
    page: list[Member] = []
    last: Position | None = None
    missing: list[str] = []
    for gw in order:
        if after is not None and gw < after.gateway_id:
            continue  # paged past it
        need = limit - len(page)
        if need == 0:
            return _Walk(page, last, tuple(missing))
        reply = have.get(gw)
        if reply is None:
            since = after.socket_id if after is not None and gw == after.gateway_id else None
            got = await ask(gw, Members(room, since, need))
            if got is None:
                continue  # gone (no responder): holds nothing any more
            if isinstance(got, str):
                missing.append(got)
                if not partial:
                    break
                continue
            reply = got
        fresh = [m for m in reply.members if after is None or Position(gw, m.socket_id) > after]
        taken = fresh[:need]
        if taken:
            page.extend(taken)
            last = Position(gw, taken[-1].socket_id)
        if len(fresh) > need or (reply.more and fresh):
            return _Walk(page, last, tuple(missing))
    return _Walk(page, None, tuple(missing))


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
        holders = await self._holders_or_all(room)
        ahead = [gw for gw in holders if after is None or gw >= after.gateway_id]

        def since(gw: str) -> str | None:
            return after.socket_id if after is not None and gw == after.gateway_id else None

        # The first holder is asked for the whole page while the socket subject is
        # asked (a room named after a socket: no directory entry): one round trip
        # when that holder fills the page.
        first = ahead[0] if ahead else None
        first_ask = (
            asyncio.ensure_future(
                self._ask_members(first, room, Members(room, since(first), limit))
            )
            if first is not None
            else None
        )

        async def ask(gw: str, req: Members) -> MembersOf | str | None:
            nonlocal first_ask
            if gw == first and first_ask is not None:  # asked for `limit`: enough
                prefetched, first_ask = first_ask, None
                return await prefetched
            return await self._ask_members(gw, room, req)

        try:
            by_socket = await self._ask_members(None, room, Members(room, None, MAX_MEMBERS_LIMIT))
            answered: dict[str, MembersOf] = {}
            missing: tuple[str, ...] = ()
            walk = _Walk([], None, ())
            if isinstance(by_socket, str):
                missing = (by_socket,)
            elif by_socket is not None and by_socket.gw not in holders:
                answered[by_socket.gw] = by_socket
            if not missing or partial:
                walk = await walk_page(
                    room, ahead, after, limit, ask, partial=partial, answered=answered
                )
                missing = tuple(sorted({*missing, *walk.missing}))
        finally:
            if first_ask is not None and not first_ask.cancel():  # done: not needed
                first_ask.exception()
        if missing and not partial:
            self._timed_out("members", room, missing, started)
        self._stats.presence("members", "partial" if missing else "ok", started)
        last = walk.last
        return MembersPage(walk.members, encode_cursor(last) if last is not None else None, missing)

    async def count(self, room: str, *, partial: bool) -> RoomCount:
        started = time.perf_counter()
        answers = await self._gather("count", room, Count(room), partial, started)
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
    async def _holders_or_all(self, room: str) -> list[str]:
        """The room's holders, or every gateway when there is no directory."""
        holders = await self.holders(room)
        if holders is None:  # no directory (no JetStream): every gateway
            self._stats.presence_fallback()
            holders = sorted({a.gw for a in await self._ask_all(Ping())})
        return holders

    async def _gather(
        self, kind: str, room: str, req: Count, partial: bool, started: float
    ) -> _Answers:
        """Every holder's answer (and the socket subject's), asked in parallel."""
        holders = await self._holders_or_all(room)
        out = _Answers()
        asks: list[str | None] = [*holders, None]
        replies = await asyncio.gather(*(self._ask(gw, room, req) for gw in asks))
        for asked, reply in zip(asks, replies, strict=True):
            if reply is None:
                continue  # gone (no responder): holds nothing any more
            if isinstance(reply, str):
                out.missing.add(reply)
            elif asked is not None or reply.gw not in out.by_gateway:
                out.by_gateway[reply.gw] = reply
        if out.missing and not partial:
            self._timed_out(kind, room, tuple(sorted(out.missing)), started)
        return out

    def _timed_out(
        self, kind: str, room: str, missing: tuple[str, ...], started: float
    ) -> NoReturn:
        self._stats.presence(kind, "timeout", started)
        raise GatewayTimeout(
            f"{kind} of {room[:80]!r}: gateway(s) {', '.join(missing)} did not "
            f"answer within {self._timeout_s}s (pass partial=True to get the others' answer)"
        )

    async def _ask_members(self, gw: str | None, room: str, req: Members) -> MembersOf | str | None:
        reply = await self._ask(gw, room, req)
        assert not isinstance(reply, CountOf)
        return reply

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


__all__ = ["DEFAULT_PAGE", "MembersPage", "RoomCount", "RoomQueries", "walk_page"]
