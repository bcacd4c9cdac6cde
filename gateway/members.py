"""A gateway's part of a room's members and count (`members` / `count` requests,
shared.control), read from its local rooms and its sockets' identities. Read-only and
bounded: a page stops at `limit` or at MEMBERS_REPLY_MAX_BYTES, whichever comes first,
saying `more`."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection
from typing import Final

import orjson

from gateway.identities import Identities
from shared.control import Count, CountOf, Member, Members, MembersOf

MEMBERS_REPLY_MAX_BYTES: Final = 512 * 1024
"""A members answer stops (saying `more`) past this size: under NATS' 1 MiB payload."""
_PER_MEMBER_BYTES: Final = 32
"""JSON punctuation and keys of one member, roughly."""


def local_answer(
    gateway_id: str, members: Collection[str], identities: Identities, req: Members | Count
) -> MembersOf | CountOf:
    """This gateway's members of the room (a page sorted by socket id, after
    `req.after`) or its count (sockets and their distinct user ids)."""
    if isinstance(req, Count):
        return CountOf(gateway_id, len(members), tuple(sorted(identities.users_among(members))))
    sids = sorted(members)
    start = bisect_right(sids, req.after) if req.after is not None else 0
    page: list[Member] = []
    size = 0
    for sid in sids[start:]:
        if len(page) >= req.limit or size >= MEMBERS_REPLY_MAX_BYTES:
            return MembersOf(gateway_id, tuple(page), more=True)
        who = identities.get(sid)
        page.append(Member(sid, who.user_id, who.info))
        size += len(sid) + len(who.user_id or "") + _PER_MEMBER_BYTES
        if who.info:
            size += len(orjson.dumps(who.info))
    return MembersOf(gateway_id, tuple(page))


__all__ = ["MEMBERS_REPLY_MAX_BYTES", "local_answer"]
