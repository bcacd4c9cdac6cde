"""Who each local socket is: its user id and presence info (shared.users).

Set once when a socket is admitted (from the JWT claims or the before-connect answer,
gateway/app.py), read by members/count answers and presence; forgotten with the socket.
Anonymous sockets have no entry, so a gateway of anonymous clients pays nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str | None
    info: dict[str, Any] | None = None


ANONYMOUS = Identity(None, None)


class Identities:
    def __init__(self) -> None:
        self._by_sid: dict[str, Identity] = {}

    def assign(self, sid: str, identity: Identity) -> None:
        if identity.user_id is None and identity.info is None:
            self._by_sid.pop(sid, None)
        else:
            self._by_sid[sid] = identity

    def get(self, sid: str) -> Identity:
        return self._by_sid.get(sid, ANONYMOUS)

    def user_of(self, sid: str) -> str | None:
        ident = self._by_sid.get(sid)
        return ident.user_id if ident is not None else None

    def forget(self, sid: str) -> None:
        self._by_sid.pop(sid, None)

    def users_among(self, sids: Iterable[str]) -> set[str]:
        """The distinct user ids of these sockets (anonymous ones have none)."""
        by_sid = self._by_sid
        return {i.user_id for s in sids if (i := by_sid.get(s)) is not None and i.user_id}

    @property
    def count(self) -> int:
        return len(self._by_sid)

    @property
    def with_user(self) -> int:
        """Local sockets that carry a user id (read at scrape time)."""
        return sum(1 for i in self._by_sid.values() if i.user_id is not None)
