"""The text log format keeps one record on one line whatever a client put in the
message or the fields; Throttled writes one line per kind per interval."""

from __future__ import annotations

import logging
import sys

import pytest

from gateway.logs import TextFormatter, Throttled, escape
from gateway.vrequests import MAX_DEPTH, deeper_than


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("gateway.vrequests", logging.WARNING, "", 0, msg, args, None)
    rec.__dict__.update(extra)
    return rec


@pytest.mark.parametrize(
    "breaker", ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]
)
def test_no_client_string_starts_a_line(breaker: str) -> None:
    forged = f"x{breaker}2026-12-03 14:00:00,000 ERROR gateway.app: FORGED"
    line = TextFormatter().format(record("get %s: no worker", forged, request_id=forged))
    assert len(line.splitlines()) == 1
    assert line.count("FORGED") == 2


def test_fields_cannot_forge_another_field() -> None:
    line = TextFormatter().format(record("m", request_id="a sid=evil] x", sid="s1"))
    assert line.endswith("[request_id=a\\x20sid=evil\\x5d\\x20x sid=s1]")


def test_escape_keeps_printable_text() -> None:
    assert escape("/user/5?q=é ü") == "/user/5?q=é ü"
    assert escape("a\nb\tc\x1b") == "a\\nb\\tc\\x1b"
    assert escape("a\\b c", field=True) == "a\\\\b\\x20c"


def test_a_traceback_still_follows_on_its_own_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("g", logging.ERROR, "", 0, "failed\n", (), sys.exc_info())
    text = TextFormatter().format(rec)
    assert text.splitlines()[0].endswith("failed\\n")
    assert "Traceback" in text.splitlines()[1]


def test_throttled_one_warning_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.throttled")
    throttled = Throttled(log, every_s=60)
    with caplog.at_level(logging.DEBUG, logger="test.throttled"):
        for _ in range(100):
            throttled.warning("a", "kind a")
            throttled.warning("b", "kind b")
        try:
            raise RuntimeError("bug")
        except RuntimeError:
            throttled.exception("c", "failed")
            throttled.exception("c", "failed")
    levels = [(r.levelname, r.getMessage(), bool(r.exc_info)) for r in caplog.records]
    assert levels.count(("WARNING", "kind a", False)) == 1
    assert levels.count(("WARNING", "kind b", False)) == 1
    assert levels.count(("DEBUG", "kind a", False)) == 99
    assert [lv for lv in levels if lv[1] == "failed"] == [
        ("ERROR", "failed", True),
        ("DEBUG", "failed", False),
    ]


def test_depth_is_measured_without_recursion() -> None:
    value: object = []
    for _ in range(100_000):  # far deeper than any recursive walk could go
        value = [value]
    assert deeper_than(value, MAX_DEPTH)
    shallow: object = {"a": [1, {"b": []}]}
    assert not deeper_than(shallow, 4)  # dict, list, dict, list
    assert deeper_than(shallow, 3)
    assert not deeper_than("text", 1)
