"""The skip policy (tests/skip_policy.py) in a real pytest session: a listed skip passes,
an unlisted one fails the session naming the test and its reason, xfail is untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.skip_policy import ALLOWED_SKIPS, allowed

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "pytest.ini").write_text("[pytest]\nxfail_strict = true\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.skip_policy", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_unlisted_skip_fails_the_session_and_is_named(tmp_path: Path) -> None:
    res = _run(
        tmp_path,
        {
            "test_a.py": (
                "import pytest\n"
                "def test_ok(): pass\n"
                "def test_gone(): pytest.skip('the tool is not installed')\n"
            )
        },
    )
    assert res.returncode == 1, res.stdout
    assert "skips not allowed" in res.stdout
    assert "test_a.py::test_gone: the tool is not installed" in res.stdout


def test_a_listed_skip_and_an_xfail_pass(tmp_path: Path) -> None:
    (listed,) = [p for p in ALLOWED_SKIPS if "test_connect_flood" in p]
    path, _, name = listed.partition("::")
    res = _run(
        tmp_path,
        {
            path: f"import pytest\ndef {name}(): pytest.skip('limit too low')\n",
            "test_b.py": (
                "import pytest\n@pytest.mark.xfail(reason='known')\ndef test_x(): assert False\n"
            ),
        },
    )
    assert res.returncode == 0, res.stdout
    assert "skips not allowed" not in res.stdout


def test_every_allowed_skip_names_an_existing_test_and_a_reason() -> None:
    for pattern, reason in ALLOWED_SKIPS.items():
        path, _, name = pattern.partition("::")
        assert (ROOT / path).is_file(), pattern
        assert f"def {name}(" in (ROOT / path).read_text(), pattern
        assert len(reason) > 20, pattern
        assert allowed(pattern) == reason
    assert allowed("tests/unit/test_config.py::test_precedence_flag_env_default") is None
