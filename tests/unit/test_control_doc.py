"""docs/protocol.md documents every control request kind and error code of
shared.control, and nothing that does not exist: other languages implement from it."""

from __future__ import annotations

import re
from pathlib import Path

from shared.control import ErrorCode, RequestKind

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def _section(title: str, until: str) -> str:
    start = DOC.index(title)
    return DOC[start : DOC.index(until, start)]


def _first_column(text: str, header: str) -> set[str]:
    """The backticked first cells of the markdown table(s) whose header row starts
    with `| <header> |`."""
    names: set[str] = set()
    in_table = False
    for line in text.splitlines():
        if line.startswith(f"| {header} |"):
            in_table = True
            continue
        if in_table and line.startswith("|---"):
            continue
        if in_table and line.startswith("| `"):
            m = re.match(r"\| `([^`]+)` \|", line)
            assert m, line
            names.add(m.group(1))
            continue
        in_table = False
    return names


REQUESTS = _section("## Requests", "### Heartbeats")


def test_every_request_kind_is_documented_and_nothing_else() -> None:
    assert _first_column(REQUESTS, "kind") == {k.value for k in RequestKind}


def test_every_error_code_is_documented_and_nothing_else() -> None:
    assert _first_column(REQUESTS, "code") == {c.value for c in ErrorCode}


def test_the_heartbeat_fields_are_documented() -> None:
    beats = _section("### Heartbeats", "## Workers")
    for field in ('{"id":', '"hello":true', '"down":true'):
        assert field in beats
