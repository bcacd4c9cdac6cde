"""docs/gateway-contract.md names every gateway option, with its variable and default, so
the chart, the docs and the code cannot drift apart silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import OPTIONS
from shared.config import Option

DOC = (Path(__file__).resolve().parents[2] / "docs" / "gateway-contract.md").read_text()
ROWS = [line for line in DOC.splitlines() if line.startswith("| `--")]
# empty defaults that mean something, stated in words in the table
EMPTY_MEANS: dict[str, str] = {
    "gateway_id": "`gw-<random>`",
    "metrics_host": "same as `--host`",
    "api_host": "same as `--host`",
}


def _shown(option: Option) -> str:
    d = option.default
    if isinstance(d, tuple):
        return ",".join(d)
    return format(d, "g") if isinstance(d, float) else str(d)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_option_is_documented(option: Option) -> None:
    assert f"`{option.flag}`" in DOC, f"{option.flag} missing from the contract"
    assert f"`{option.env}`" in DOC, f"{option.env} missing from the contract"


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_option_default_is_the_documented_one(option: Option) -> None:
    (row,) = [r for r in ROWS if f"`{option.flag}`" in r.split("|")[1]]
    default_cell = row.split("|")[3]
    shown = _shown(option)
    if option.name in EMPTY_MEANS:
        assert EMPTY_MEANS[option.name] in default_cell
    elif shown:
        assert f"`{shown}`" in default_cell, f"{option.flag}: the code's default is {shown}"
    else:
        assert "–" in default_cell, f"{option.flag}: no default, say – in the contract"
