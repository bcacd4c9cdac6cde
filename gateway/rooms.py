"""Which local sockets are in which rooms: the gateway's only membership state.

Pure bookkeeping, no I/O. Callers learn from the return values when a room gains its
first or loses its last local member, which is when NATS interest must change.
Everything here can be rebuilt from the sockets' own requests, so a restarted or
recovering gateway needs nothing persisted.
"""

from __future__ import annotations

from collections.abc import Iterable

_EMPTY: frozenset[str] = frozenset()


class LocalRooms:
    __slots__ = ("_members", "_rooms_of")

    def __init__(self) -> None:
        self._members: dict[str, set[str]] = {}
        self._rooms_of: dict[str, set[str]] = {}

    def add_socket(self, sid: str) -> None:
        self._rooms_of.setdefault(sid, set())

    def remove_socket(self, sid: str) -> list[str]:
        """Forget a socket; returns the rooms it left empty."""
        emptied = []
        for room in self._rooms_of.pop(sid, ()):
            members = self._members.get(room)
            if members is None:
                continue
            members.discard(sid)
            if not members:
                del self._members[room]
                emptied.append(room)
        return emptied

    def has_socket(self, sid: str) -> bool:
        return sid in self._rooms_of

    def join(self, sid: str, room: str) -> bool:
        """Add sid to room; True when the room had no local member before."""
        rooms = self._rooms_of.get(sid)
        if rooms is None:
            raise KeyError(sid)
        rooms.add(room)
        members = self._members.get(room)
        if members is None:
            self._members[room] = {sid}
            return True
        members.add(sid)
        return False

    def leave(self, sid: str, room: str) -> bool:
        """Remove sid from room; True when that left the room without local members."""
        rooms = self._rooms_of.get(sid)
        if rooms is not None:
            rooms.discard(room)
        members = self._members.get(room)
        if members is None or sid not in members:
            return False
        members.discard(sid)
        if not members:
            del self._members[room]
            return True
        return False

    def members(self, room: str) -> set[str] | frozenset[str]:
        return self._members.get(room, _EMPTY)

    def rooms_of(self, sid: str) -> set[str] | frozenset[str]:
        return self._rooms_of.get(sid, _EMPTY)

    def sockets(self) -> Iterable[str]:
        return self._rooms_of.keys()

    @property
    def socket_count(self) -> int:
        return len(self._rooms_of)

    @property
    def room_count(self) -> int:
        return len(self._members)
