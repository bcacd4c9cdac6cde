"""Unit tests import no integration helper: from the test tree they may import only
`tests.support` (helpers without I/O), other unit test modules and the skip policy
under test; and `tests.support` itself opens nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT_MAY_IMPORT = ("tests.support", "tests.unit", "tests.skip_policy")
NO_IO = ("socket", "subprocess", "asyncio", "nats", "aiohttp", "socketio", "engineio", "urllib")


def imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute imports"
            base = node.module or ""
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@pytest.mark.parametrize(
    "path", sorted((ROOT / "tests" / "unit").glob("*.py")), ids=lambda p: p.name
)
def test_unit_test_imports_no_integration_helper(path: Path) -> None:
    ours = {n for n in imported(path) if n == "tests" or n.startswith("tests.")}
    bad = sorted(n for n in ours if not _within(n, UNIT_MAY_IMPORT))
    assert not bad, f"{path.name} imports {bad}; move what it needs to tests/support/"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "tests" / "support").glob("*.py")), ids=lambda p: p.name
)
def test_support_helpers_do_no_io(path: Path) -> None:
    names = imported(path)
    bad = sorted(n for n in names if n.split(".")[0] in NO_IO)
    assert not bad, f"tests/support/{path.name} imports {bad}"
    tests_imports = {n for n in names if n.startswith("tests.")}
    assert all(_within(n, ("tests.support",)) for n in tests_imports), tests_imports


def test_the_scan_sees_an_integration_import(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text("from tests.helpers import start_gateway\nimport tests.integration.x\n")
    assert imported(probe) == {"tests.helpers.start_gateway", "tests.integration.x"}
    assert not _within("tests.helpers.start_gateway", UNIT_MAY_IMPORT)
