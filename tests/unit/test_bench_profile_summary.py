"""bench/profile_run.py's summary of py-spy's collapsed stacks (pure)."""

from __future__ import annotations

from pathlib import Path

from bench.profile_run import summarize


def test_self_and_inclusive_shares(tmp_path: Path) -> None:
    a = tmp_path / "a.collapsed"
    a.write_text("main;loop;deliver 60\nmain;loop;read 30\n")
    b = tmp_path / "b.collapsed"
    b.write_text("main;loop;deliver 10\nbroken line\n")
    text = summarize([a, b], top=5)
    assert text.startswith("100 samples over 2 process(es)")
    own = text.split("on CPU (self):")[1].split("inclusive:")[0]
    assert own.splitlines()[1].split() == ["70.0", "%", "deliver"]
    inclusive = text.split("inclusive:")[1]
    assert "100.0 %  main" in inclusive
    assert "100.0 %  loop" in inclusive


def test_no_samples(tmp_path: Path) -> None:
    empty = tmp_path / "e.collapsed"
    empty.write_text("")
    assert summarize([empty], top=5) == "no samples\n"
