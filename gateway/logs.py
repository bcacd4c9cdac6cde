"""Logging set-up: human text or one JSON object per line."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Final

import orjson

_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(
            (k, v) for k, v in record.__dict__.items() if k not in _STD_ATTRS and k[0] != "_"
        )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "engineio", "socketio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


WARN_EVERY_S: Final = 5.0


class Throttled:
    """At most one WARNING per kind every WARN_EVERY_S, the rest at DEBUG: a storm of
    bad input or of requests without workers must not flood the log."""

    def __init__(self, logger: logging.Logger, every_s: float = WARN_EVERY_S) -> None:
        self._log = logger
        self._every_s = every_s
        self._last: dict[str, float] = {}

    def warning(self, kind: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self._every_s) >= self._every_s:
            self._last[kind] = now
            self._log.warning(msg, *args)
        else:
            self._log.debug(msg, *args)
