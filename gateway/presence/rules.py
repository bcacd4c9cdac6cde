"""Which rooms have presence, and which only counts: the operator's glob patterns.

`--presence 'chat:*,lobby'` and `--presence-count-only 'stadium:*'`: comma-separated
globs over room names (`*` any run of characters, `?` one, as history rules,
shared/history.py). A room matching a count-only pattern is count-only even if a
presence pattern matches it too (the cheaper mode wins). Reserved rooms (`sailcast:`,
shared/users.py) never have presence; a socket's own-id room is excluded by the caller,
which knows the socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatchcase
from typing import Final

from shared.errors import ConfigError
from shared.users import is_reserved

CACHE_MAX: Final = 65536


class Mode(Enum):
    MEMBERS = "members"
    """join/leave events and a state for newcomers"""
    COUNT = "count"
    """periodic counts only"""


def parse_patterns(text: str, variable: str) -> tuple[str, ...]:
    patterns = tuple(p.strip() for p in text.split(",") if p.strip())
    for p in patterns:
        if any(c.isspace() for c in p):
            raise ConfigError(f"{variable}: pattern {p!r} must not contain whitespace")
    return patterns


def _matches(pattern: str, room: str) -> bool:
    return pattern == "*" or fnmatchcase(room, pattern)


@dataclass(frozen=True, slots=True)
class PresenceRules:
    members: tuple[str, ...] = ()
    count_only: tuple[str, ...] = ()

    @classmethod
    def parse(cls, members: str, count_only: str) -> PresenceRules:
        return cls(
            parse_patterns(members, "SAILCAST_PRESENCE"),
            parse_patterns(count_only, "SAILCAST_PRESENCE_COUNT_ONLY"),
        )

    def __bool__(self) -> bool:
        return bool(self.members or self.count_only)

    def mode_for(self, room: str) -> Mode | None:
        if is_reserved(room):
            return None
        if any(_matches(p, room) for p in self.count_only):
            return Mode.COUNT
        if any(_matches(p, room) for p in self.members):
            return Mode.MEMBERS
        return None


class RuleCache:
    """`mode_for` looked up once per room name (bounded): it runs on every join."""

    def __init__(self, rules: PresenceRules) -> None:
        self.rules = rules
        self._cache: dict[str, Mode | None] = {}

    def mode_for(self, room: str) -> Mode | None:
        try:
            return self._cache[room]
        except KeyError:
            pass
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        mode = self._cache[room] = self.rules.mode_for(room)
        return mode
