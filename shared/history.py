"""Per-room history: which rooms keep it, and how a position in it is written.

One JetStream stream per deployment prefix holds the messages of history rooms (see
docs/recovery.md). Publishers send a history room's messages to its history subject
`<p>.h.<room>` (shared.subjects); the stream stores them and re-publishes each on the
room's ordinary subject `<p>.r.<room>`, with its stream sequence in the headers, so
gateways keep their one subscription per room.

The operator's rules (`--history` / `SAILCAST_HISTORY`) are `PATTERN=MAXMSGS/MAXAGE`,
comma-separated; a pattern is a glob over room names (`*` any run of characters, `?`
one character), the first match wins. The gateways write the rules into the stream's
metadata when they create or reconcile it, so a publisher reads the very rules the
gateways use instead of being configured twice.

An offset, as a client sees it, is `<epoch>:<seq>`: the stream's epoch (which changes
when the stream is recreated, so a new stream is never taken for continuity) and the
stream sequence of the last stored message the client received.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final

from shared.errors import ConfigError

METADATA_KEY: Final = "sailcast_history"
"""The stream-metadata key holding the rules' canonical text."""

_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_AGE_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_OFFSET: Final = re.compile(r"([0-9a-z]{1,16}):([0-9]{1,20})")
_NAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")


def parse_age(text: str) -> float:
    """`90s`, `2m`, `1.5h`, `10` (seconds) → seconds."""
    m = _AGE.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"history age {text!r} must be a number with s, m, h or d (e.g. 2m)")
    return float(m.group(1)) * _AGE_UNITS[m.group(2) or "s"]


def format_age(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        size = _AGE_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class HistoryRule:
    pattern: str
    max_msgs: int
    max_age_s: float

    def matches(self, room: str) -> bool:
        return self.pattern == "*" or fnmatchcase(room, self.pattern)

    @property
    def text(self) -> str:
        return f"{self.pattern}={self.max_msgs}/{format_age(self.max_age_s)}"


@dataclass(frozen=True, slots=True)
class HistoryRules:
    """The operator's history rules; empty means no history (today's fast path only)."""

    rules: tuple[HistoryRule, ...] = ()

    @classmethod
    def parse(cls, text: str) -> HistoryRules:
        rules: list[HistoryRule] = []
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            pattern, eq, limits = item.rpartition("=")
            size, slash, age = limits.partition("/")
            if not eq or not pattern or not slash:
                raise ConfigError(
                    f"history rule {item!r} must be PATTERN=MAXMSGS/MAXAGE (e.g. 'chat:*=300/2m')"
                )
            try:
                max_msgs = int(size)
            except ValueError:
                raise ConfigError(f"history rule {item!r}: {size!r} is not a count") from None
            max_age_s = parse_age(age)
            if max_msgs < 1 or max_age_s <= 0:
                raise ConfigError(f"history rule {item!r}: size and age must be positive")
            rules.append(HistoryRule(pattern, max_msgs, max_age_s))
        return cls(tuple(rules))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def rule_for(self, room: str) -> HistoryRule | None:
        """The first rule whose pattern matches `room`; None: the room keeps no history."""
        for rule in self.rules:
            if rule.matches(room):
                return rule
        return None

    @property
    def text(self) -> str:
        """Canonical text: what goes into the stream's metadata, and parses back equal."""
        return ",".join(r.text for r in self.rules)

    @property
    def max_msgs(self) -> int:
        """The stream's per-subject bound: the largest rule's (smaller rules are applied
        when replaying)."""
        return max((r.max_msgs for r in self.rules), default=0)

    @property
    def max_age_s(self) -> float:
        return max((r.max_age_s for r in self.rules), default=0.0)


def _safe(prefix: str) -> str:
    return _NAME_UNSAFE.sub("_", prefix)


def stream_name(prefix: str) -> str:
    """The history stream of a deployment prefix (stream names allow no dots)."""
    return f"sailcast_history_{_safe(prefix)}"


def sessions_bucket(prefix: str) -> str:
    """The KV bucket of recoverable sessions of a deployment prefix."""
    return f"sailcast_sessions_{_safe(prefix)}"


def epoch_of(stream: str, created: str) -> str:
    """A short id of one stream instance: its name and creation time hashed, so a
    recreated stream (same name, new creation time) has another epoch."""
    digest = hashlib.blake2s(f"{stream}\0{created}".encode(), digest_size=5).digest()
    return format(int.from_bytes(digest, "big"), "x")


def format_offset(epoch: str, seq: int) -> str:
    return f"{epoch}:{seq}"


def parse_offset(value: object) -> tuple[str, int] | None:
    """(epoch, seq) of a client's offset; None for anything we cannot have written (a
    socket.io client reports the last string argument it saw, which may be junk)."""
    if type(value) is not str:
        return None
    m = _OFFSET.fullmatch(value)
    if m is None:
        return None
    return m.group(1), int(m.group(2))


__all__ = [
    "METADATA_KEY",
    "HistoryRule",
    "HistoryRules",
    "epoch_of",
    "format_age",
    "format_offset",
    "parse_age",
    "parse_offset",
    "sessions_bucket",
    "stream_name",
]
