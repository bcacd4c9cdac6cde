"""What one member of a presence room believes, and the truth it is checked against.

A client's view of a room is rebuilt from what the gateway sends it: `presence_state`
(the whole member list, on joining) replaces the view, `presence` diffs (`joins`,
`leaves`, de-duplicated by user) change it, and in a count-only room the last
`presence_count` is the view. After churn stops and the gateways have flushed, every
member's view must equal the truth the harness kept (who it put in the room): that is
the benchmark's correctness check. Pure logic, unit-tested (tests/unit/test_presence_views.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

PRESENCE: Final = "presence"
PRESENCE_STATE: Final = "presence_state"
PRESENCE_COUNT: Final = "presence_count"
EVENTS: Final = (PRESENCE, PRESENCE_STATE, PRESENCE_COUNT)


def _user(entry: Any) -> str | None:
    if isinstance(entry, Mapping):
        uid = entry.get("user_id")
        return str(uid) if uid is not None else None
    return None


@dataclass
class View:
    """One socket's picture of one room."""

    users: set[str] = field(default_factory=set)
    sockets: int | None = None
    """From `presence_count` (count-only rooms); None until one arrived."""
    user_count: int | None = None
    events: int = 0
    states: int = 0
    counts: int = 0
    deltas: int = 0
    """Join and leave entries received in `presence` diffs."""
    malformed: int = 0

    def apply(self, event: str, data: Any) -> None:
        """Fold one received event in (unknown shapes are counted, not raised)."""
        if not isinstance(data, Mapping):
            self.malformed += 1
            return
        if event == PRESENCE_STATE:
            members = data.get("members")
            if not isinstance(members, list):
                self.malformed += 1
                return
            self.states += 1
            self.users = {u for u in map(_user, members) if u is not None}
        elif event == PRESENCE:
            joins, leaves = data.get("joins", []), data.get("leaves", [])
            if not isinstance(joins, list) or not isinstance(leaves, list):
                self.malformed += 1
                return
            self.events += 1
            self.deltas += len(joins) + len(leaves)
            # A diff covers one interval: someone who left and came back within it
            # is listed as both, and is here at its end, so leaves go first.
            self.users.difference_update(u for u in map(_user, leaves) if u is not None)
            self.users.update(u for u in map(_user, joins) if u is not None)
        elif event == PRESENCE_COUNT:
            sockets, users = data.get("sockets"), data.get("users")
            if not isinstance(sockets, int) or not isinstance(users, int):
                self.malformed += 1
                return
            self.counts += 1
            self.sockets, self.user_count = sockets, users


@dataclass(frozen=True, kw_only=True)
class Truth:
    """Who is in the room, as the harness put them there."""

    users: frozenset[str]
    sockets: int

    @classmethod
    def of(cls, members: Mapping[str, str]) -> Truth:
        """From member socket id -> user id."""
        return cls(users=frozenset(members.values()), sockets=len(members))


def mismatch(view: Mapping[str, Any], truth: Truth, *, count_only: bool) -> str | None:
    """Why a member's final view (as :meth:`View` fields in a dict) is wrong, or None."""
    if count_only:
        got = (view.get("sockets"), view.get("user_count"))
        want = (truth.sockets, len(truth.users))
        return None if got == want else f"count {got} != truth {want}"
    users = set(view.get("users", ()))
    if users == truth.users:
        return None
    missing, extra = sorted(truth.users - users), sorted(users - truth.users)
    return f"missing {missing[:5]}{'…' if len(missing) > 5 else ''} ({len(missing)}), " + (
        f"extra {extra[:5]}{'…' if len(extra) > 5 else ''} ({len(extra)})"
    )


def mismatches(
    views: Mapping[str, Mapping[str, Any]],
    truth: Truth,
    members: Iterable[str],
    *,
    count_only: bool,
) -> dict[str, str]:
    """Every member (socket id) whose view differs from the truth, with why; a member
    that never got any view at all is a mismatch too."""
    out: dict[str, str] = {}
    for sid in members:
        view = views.get(sid)
        if view is None:
            out[sid] = "no view (received nothing for the room)"
        elif (why := mismatch(view, truth, count_only=count_only)) is not None:
            out[sid] = why
    return out
