"""bench/run.py's options for issue 17: equal-load rates and repeats."""

from __future__ import annotations

import pytest

from bench import run


def test_rates_override_the_equal_load_steps() -> None:
    sizes = run.sizes_from(run.parse_args(["--s1-rates", "2,10,40", "--s2-rates", "500"]))
    assert sizes.s1_fixed_rates == (2.0, 10.0, 40.0)
    assert sizes.s2_fixed_rates == (500.0,)
    default = run.sizes_from(run.parse_args([]))
    assert default.s1_latency_rate in default.s1_fixed_rates
    assert len(default.s1_fixed_rates) >= 3  # several, a mid rate among them


@pytest.mark.parametrize("bad", ["", "2,x", "0,10", "-5"])
def test_bad_rates_are_refused(bad: str) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--s1-rates", bad])


def test_repeat_defaults_to_one_run() -> None:
    assert run.parse_args([]).repeat == 1
    assert run.parse_args(["--repeat", "3"]).repeat == 3
