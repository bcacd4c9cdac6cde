"""One presence room's cluster-wide state as one gateway knows it: pure, no I/O.

Each holder (a gateway with members in the room) states facts about itself only (the
keys it holds, their info, its socket count; shared/presence.py). The view keeps each
holder's last facts and merges them: key → the gateways holding it. A key is present
while that set is non-empty, so a user's tabs on several gateways are one member, and
the order in which different gateways' messages arrive does not matter: the merge of
per-holder facts is the same whatever the interleaving (a state-based CRDT in the manner
of Phoenix.Tracker, each replica owning its own part). One holder's messages are
ordered by `(inc, seq)`: old and repeated ones are ignored, a missing one (`prev` not the
last seen) makes `apply` ask for the holder's whole state.

A key's info is the one stated by the smallest gateway id holding it, so every gateway
shows the same info for a user whose tabs disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.presence import Fact, Info, PresenceDelta, PresenceState, is_user_key


@dataclass(slots=True)
class _Holder:
    inc: int
    seq: int
    facts: dict[str, Info] = field(default_factory=dict)
    sockets: int = 0
    dropped: bool = False
    """Declared dead: its facts are gone until it sends a whole state again."""


@dataclass(slots=True)
class _Staging:
    inc: int
    seq: int
    facts: list[Fact]


class RoomView:
    __slots__ = ("_by_key", "_holders", "_staging", "_users", "touched", "transitions")

    def __init__(self) -> None:
        self._holders: dict[str, _Holder] = {}
        self._by_key: dict[str, set[str]] = {}
        self._staging: dict[str, _Staging] = {}
        self._users = 0
        self.touched: set[str] = set()
        """Keys whose presence or info may have changed since the caller last cleared it."""
        self.transitions = 0
        """Keys gone present or absent since the caller last reset it (coalescing)."""

    # -- reading ---------------------------------------------------------------------
    def present(self, key: str) -> bool:
        return key in self._by_key

    def info(self, key: str) -> Info:
        holders = self._by_key.get(key)
        if not holders:
            return None
        return self._holders[min(holders)].facts.get(key)

    def keys(self) -> list[str]:
        return list(self._by_key)

    def members(self) -> dict[str, Info]:
        return {k: self.info(k) for k in self._by_key}

    def holders_of(self, key: str) -> frozenset[str]:
        return frozenset(self._by_key.get(key, ()))

    def facts_of(self, gw: str) -> Mapping[str, Info]:
        """What `gw` holds (read-only, not a copy)."""
        holder = self._holders.get(gw)
        return holder.facts if holder is not None else {}

    def sockets_of(self, gw: str) -> int:
        holder = self._holders.get(gw)
        return holder.sockets if holder is not None else 0

    def gateways(self) -> list[str]:
        """Every gateway this view has facts or an order from (dropped ones included)."""
        return list(self._holders)

    @property
    def sockets(self) -> int:
        return sum(h.sockets for h in self._holders.values())

    @property
    def users(self) -> int:
        return self._users

    # -- changing --------------------------------------------------------------------
    def apply(self, msg: PresenceDelta | PresenceState) -> bool:
        """Merge one holder's message; True when that holder should be asked for its
        whole state (a message of it was lost, or it is new to us mid-stream)."""
        gw = msg.gw
        holder = self._holders.get(gw)
        if holder is not None and (msg.inc, msg.seq) <= (holder.inc, holder.seq):
            return False  # old or repeated
        if isinstance(msg, PresenceState):
            return self._apply_state(msg)
        resync = False
        if self._staging.pop(gw, None) is not None:
            resync = True  # a delta while parts of a state were due: parts were lost
        if holder is None:
            holder = self._holders[gw] = _Holder(msg.inc, msg.seq)
            resync = True
        elif holder.dropped or msg.inc != holder.inc or msg.prev != holder.seq:
            resync = True
        holder.inc, holder.seq, holder.sockets = msg.inc, msg.seq, msg.sockets
        for fact in msg.add:
            self._set(gw, holder, fact.key, fact.info)
        for key in msg.remove:
            self._unset(gw, holder, key)
        return resync

    def _apply_state(self, msg: PresenceState) -> bool:
        gw = msg.gw
        staging = self._staging.get(gw)
        if msg.first:
            if staging is not None and (staging.inc, staging.seq) >= (msg.inc, msg.seq):
                return False  # a repeated part
            staging = self._staging[gw] = _Staging(msg.inc, msg.seq, list(msg.facts))
        else:
            if staging is not None and staging.inc == msg.inc and msg.seq <= staging.seq:
                return False  # a repeated part
            if staging is None or staging.inc != msg.inc or staging.seq != msg.prev:
                self._staging.pop(gw, None)
                return True  # a part was lost: ask again
            staging.seq = msg.seq
            staging.facts.extend(msg.facts)
        if msg.last:
            del self._staging[gw]
            self.replace(gw, msg.inc, msg.seq, staging.facts, msg.sockets)
        return False

    def replace(self, gw: str, inc: int, seq: int, facts: list[Fact], sockets: int) -> None:
        """Everything `gw` holds now (a whole state)."""
        holder = self._holders.get(gw)
        if holder is None:
            holder = self._holders[gw] = _Holder(inc, seq)
        holder.inc, holder.seq, holder.sockets, holder.dropped = inc, seq, sockets, False
        new = {f.key: f.info for f in facts}
        for key in [k for k in holder.facts if k not in new]:
            self._unset(gw, holder, key)
        for key, info in new.items():
            self._set(gw, holder, key, info)

    def apply_own(self, gw: str, add: list[Fact], remove: list[str], sockets: int) -> None:
        """This gateway's own facts, applied directly (they need no ordering)."""
        holder = self._holders.get(gw)
        if holder is None:
            holder = self._holders[gw] = _Holder(0, 0)
        holder.sockets = sockets
        for fact in add:
            self._set(gw, holder, fact.key, fact.info)
        for key in remove:
            self._unset(gw, holder, key)

    def drop(self, gw: str) -> bool:
        """A holder declared dead: its facts go (its keys leave where it was their last
        holder); its order is kept so its old messages stay ignored. True if it held
        anything."""
        holder = self._holders.get(gw)
        self._staging.pop(gw, None)
        if holder is None or holder.dropped:
            return False
        had = bool(holder.facts) or holder.sockets > 0
        for key in list(holder.facts):
            self._unset(gw, holder, key)
        holder.sockets = 0
        holder.dropped = True
        return had

    def _set(self, gw: str, holder: _Holder, key: str, info: Info) -> None:
        known = key in holder.facts
        if known and holder.facts[key] == info:
            return
        holder.facts[key] = info
        self.touched.add(key)
        if known:
            return
        holders = self._by_key.get(key)
        if holders is None:
            self._by_key[key] = {gw}
            self.transitions += 1
            if is_user_key(key):
                self._users += 1
        else:
            holders.add(gw)

    def _unset(self, gw: str, holder: _Holder, key: str) -> None:
        if key not in holder.facts:
            return
        del holder.facts[key]
        self.touched.add(key)
        holders = self._by_key[key]
        holders.discard(gw)
        if not holders:
            del self._by_key[key]
            self.transitions += 1
            if is_user_key(key):
                self._users -= 1
