"""One presence room on this gateway: its local members by presence key, what is due
to be published, and what the members were last told (the coalescer).

Pure bookkeeping, no I/O: `gateway.presence.service` drives it once per window.
Coalescing falls out of comparing snapshots: members are told the difference between
the view at the last window and the view now, so a key that joined and left (or left
and came back with the same info) within one window is never announced; the
transitions that cancelled out are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.presence.rules import Mode
from gateway.presence.state import RoomView
from shared.presence import Fact, Info, member_entry


class LocalRoom:
    __slots__ = (
        "ask",
        "asked_at",
        "dirty",
        "hello",
        "key_of",
        "last_sent",
        "local_transitions",
        "mark_due",
        "mode",
        "newcomers",
        "prev",
        "room",
        "send_state",
        "sids_by_key",
        "told",
        "told_count",
        "view",
    )

    def __init__(self, room: str, mode: Mode) -> None:
        self.room = room
        self.mode = mode
        self.view = RoomView()
        self.key_of: dict[str, str | None] = {}
        """Local sockets in the room → their key (None: anonymous in a count-only room)."""
        self.sids_by_key: dict[str, set[str]] = {}
        self.dirty: set[str] = set()
        """Keys whose sockets here changed since the last publish."""
        self.local_transitions = 0
        """Local keys gone present or absent since the last publish (coalescing)."""
        self.newcomers: set[str] = set()
        """Sockets joined since the last window: they get a state (or a count), not a diff."""
        self.told: dict[str, Info] = {}
        self.told_count: tuple[int, int] | None = None
        self.prev = 0
        """`seq` of the last message this gateway sent for the room."""
        self.send_state = True
        """Publish the whole local state at the next window (a new room, or asked)."""
        self.hello = True
        """…and ask every holder for theirs (a new room, or after a reconnect)."""
        self.ask: set[str] = set()
        """Gateways to ask for their state at the next window (a gap was seen)."""
        self.asked_at = float("-inf")
        self.last_sent = float("-inf")
        self.mark_due = False
        """Send a mark (an empty delta) once the room has been quiet for a period: a
        lost last delta is then seen as a gap instead of lasting until the next change."""

    @property
    def sockets(self) -> int:
        return len(self.key_of)

    def add(self, sid: str, key: str | None) -> None:
        if sid in self.key_of:
            return
        self.key_of[sid] = key
        self.newcomers.add(sid)
        if key is not None:
            self.dirty.add(key)
            sids = self.sids_by_key.get(key)
            if sids is None:
                sids = self.sids_by_key[key] = set()
                self.local_transitions += 1
            sids.add(sid)

    def remove(self, sid: str) -> None:
        if sid not in self.key_of:
            return
        key = self.key_of.pop(sid)
        self.newcomers.discard(sid)
        if key is not None:
            self.dirty.add(key)
            sids = self.sids_by_key[key]
            sids.discard(sid)
            if not sids:
                del self.sids_by_key[key]
                self.local_transitions += 1

    def local_facts(self, info_of: Callable[[str], Info]) -> dict[str, Info]:
        """This gateway's facts now: each key with the info of its smallest socket id
        here (count-only rooms carry no info). For a whole state."""
        return {key: self._info(sids, info_of) for key, sids in self.sids_by_key.items()}

    def _info(self, sids: set[str], info_of: Callable[[str], Info]) -> Info:
        return None if self.mode is Mode.COUNT else info_of(min(sids))

    def changes(
        self, published: Mapping[str, Info], info_of: Callable[[str], Info]
    ) -> tuple[list[Fact], list[str], int]:
        """What to publish, looking only at the keys that changed here: (facts added or
        changed, keys gone, local transitions that cancelled out since the last publish
        and are never published)."""
        add: list[Fact] = []
        remove: list[str] = []
        net = 0
        for key in self.dirty:
            sids = self.sids_by_key.get(key)
            if sids:
                info = self._info(sids, info_of)
                if key not in published:
                    net += 1
                    add.append(Fact(key, info))
                elif published[key] != info:
                    add.append(Fact(key, info))
            elif key in published:
                net += 1
                remove.append(key)
        self.dirty.clear()
        cancelled = max(0, self.local_transitions - net)
        self.local_transitions = 0
        return add, remove, cancelled

    def diff(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        """What changed since the members were last told: (joins, leaves, transitions
        coalesced away). Joins include a present key whose info changed (an upsert)."""
        view, told = self.view, self.told
        joins: list[dict[str, Any]] = []
        leaves: list[dict[str, Any]] = []
        new = 0
        for key in sorted(view.touched):
            if view.present(key):
                info = view.info(key)
                if key not in told or told[key] != info:
                    new += key not in told
                    told[key] = info
                    joins.append(member_entry(key, info))
            elif key in told:
                del told[key]
                leaves.append(member_entry(key, None, with_info=False))
        view.touched.clear()
        coalesced = max(0, view.transitions - new - len(leaves))
        view.transitions = 0
        return joins, leaves, coalesced

    def members_payload(self) -> list[dict[str, Any]]:
        return [member_entry(k, i) for k, i in sorted(self.told.items())]

    def count(self) -> tuple[int, int]:
        return self.view.sockets, self.view.users
