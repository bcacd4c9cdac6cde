"""Which rooms have presence (gateway.presence.rules) and the settings that name them."""

from __future__ import annotations

import pytest

from gateway.presence.rules import Mode, PresenceRules, RuleCache
from gateway.settings import PresenceSettings
from shared.errors import ConfigError


def test_globs_pick_the_mode_and_count_only_wins() -> None:
    rules = PresenceRules.parse("chat:*, lobby,stadium:vip", "stadium:*")
    assert rules.mode_for("chat:1") is Mode.MEMBERS
    assert rules.mode_for("lobby") is Mode.MEMBERS
    assert rules.mode_for("lobby2") is None
    assert rules.mode_for("stadium:vip") is Mode.COUNT
    assert rules.mode_for("stadium:1") is Mode.COUNT


def test_reserved_rooms_never_have_presence() -> None:
    rules = PresenceRules.parse("*", "")
    assert rules.mode_for("anything") is Mode.MEMBERS
    assert rules.mode_for("sailcast:user:42") is None


def test_no_rules_is_off() -> None:
    assert not PresenceRules.parse("", " , ")
    assert PresenceRules.parse("", "x")


def test_the_cache_answers_as_the_rules() -> None:
    cache = RuleCache(PresenceRules.parse("a*", ""))
    assert [cache.mode_for(r) for r in ("ab", "ab", "b")] == [Mode.MEMBERS, Mode.MEMBERS, None]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"presence": "chat: *"}, "SAILCAST_PRESENCE"),
        ({"presence_count_only": "a b"}, "SAILCAST_PRESENCE_COUNT_ONLY"),
        ({"presence_interval_s": 0}, "SAILCAST_PRESENCE_INTERVAL_S"),
        ({"presence_count_interval_s": -1}, "SAILCAST_PRESENCE_COUNT_INTERVAL_S"),
    ],
)
def test_bad_settings_name_their_variable(options: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        PresenceSettings(**options)  # type: ignore[arg-type]
