"""Every test module has its own basename: the suite runs in pytest's rootdir import mode
(no packages under tests/), where two `test_x.py` in different folders stop the whole
collection with "import file mismatch" — found only in a clean CI run otherwise."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_basename() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py") if "node_modules" not in p.parts)
    assert [n for n, c in names.items() if c > 1] == []
