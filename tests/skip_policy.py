"""A skipped test fails the session unless it is listed here with the reason it may skip.

A skip is a test that did not run while the summary still says "passed": a missing tool,
a helper that could not import, a machine limit. Those are almost always reasons to
fix the set-up (`make test-tools` installs every tool the suite uses), not to go green.
So every skip must be one of `ALLOWED_SKIPS` (node id pattern, `fnmatch` style → why
skipping is right there); any other skip is reported by name with its reason and makes
the session fail. xfail is not a skip: `xfail_strict` covers it.

Loaded by tests/conftest.py; `-p tests.skip_policy` loads it into any pytest session.
"""

from __future__ import annotations

import fnmatch
from typing import Final

import pytest

ALLOWED_SKIPS: Final[dict[str, str]] = {
    "tests/faults/test_connect_flood.py::test_connect_flood": (
        "the machine's hard file-descriptor limit is below what the flood needs; the test "
        "raises the soft limit itself, and only root can raise the hard one"
    ),
}

_unlisted: list[tuple[str, str]] = []


def allowed(nodeid: str) -> str | None:
    """Why `nodeid` may skip, or None when it may not."""
    for pattern, reason in ALLOWED_SKIPS.items():
        if fnmatch.fnmatchcase(nodeid, pattern):
            return reason
    return None


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and allowed(report.nodeid) is None:
        _unlisted.append((report.nodeid, _reason(report)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unlisted and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _unlisted:
        return
    terminalreporter.section("skips not allowed (tests/skip_policy.py)", sep="=", red=True)
    for nodeid, reason in _unlisted:
        terminalreporter.line(f"SKIPPED {nodeid}: {reason}", red=True)
    terminalreporter.line(
        "A skipped test did not run. Fix the set-up (make test-tools) or, if skipping is "
        "right there, list the test in tests/skip_policy.py ALLOWED_SKIPS with the reason.",
        red=True,
    )
