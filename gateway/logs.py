"""Logging set-up: human text or one JSON object per line.

What a line is about travels as structured fields, passed with `extra=`: `sid` (the
Socket.IO socket id, what workers see as `req.socket_id`), `request_id` (a virtual
request's `x-request-id`), `eio_sid`, `remote`, `origin`, `reason`. The JSON format
makes each one a key of the line's object; the text format appends them as
`[sid=... request_id=...]`, so messages never repeat them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

import orjson

from gateway.settings import LogSettings

_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


def context(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    """The fields a record got through `extra=`."""
    return ((k, v) for k, v in record.__dict__.items() if k not in _STD_ATTRS and k[0] != "_")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(context(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{k}={v}" for k, v in context(record))
        return f"{line} [{fields}]" if fields else line


def configure(settings: LogSettings) -> None:
    """The process's logging, from its `logs` settings slice."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("aiohttp.access",):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


WARN_EVERY_S: Final = 5.0


class Throttled:
    """At most one WARNING per kind every WARN_EVERY_S, the rest at DEBUG: a storm of
    bad input or of requests without workers must not flood the log."""

    def __init__(self, logger: logging.Logger, every_s: float = WARN_EVERY_S) -> None:
        self._log = logger
        self._every_s = every_s
        self._last: dict[str, float] = {}

    def warning(
        self, kind: str, msg: str, *args: Any, extra: Mapping[str, Any] | None = None
    ) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self._every_s) >= self._every_s:
            self._last[kind] = now
            self._log.warning(msg, *args, extra=extra)
        else:
            self._log.debug(msg, *args, extra=extra)
