"""docs/gateway-contract.md names every gateway option, so the chart, the docs and the
code cannot drift apart silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import OPTIONS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "gateway-contract.md").read_text()


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_option_is_documented(option: object) -> None:
    flag = option.flag  # type: ignore[attr-defined]
    env = option.env  # type: ignore[attr-defined]
    assert f"`{flag}`" in DOC, f"{flag} missing from the contract"
    assert f"`{env}`" in DOC, f"{env} missing from the contract"
