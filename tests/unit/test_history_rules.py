"""History rules, offsets and names (shared/history.py): pure, no I/O."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.history import (
    HistoryRules,
    epoch_of,
    format_offset,
    parse_age,
    parse_offset,
    sessions_bucket,
    stream_name,
)
from shared.subjects import Subjects


def test_first_matching_rule_wins_and_star_matches_every_room() -> None:
    rules = HistoryRules.parse("chat:*=300/2m, sails_model_*=100/10m,*=5/30s")
    assert rules.rule_for("chat:lobby") is rules.rules[0]
    assert rules.rule_for("sails_model_todo_7") is rules.rules[1]
    assert rules.rule_for("any room. with * and >") is rules.rules[2]
    assert rules.max_msgs == 300
    assert rules.max_age_s == 600.0
    assert HistoryRules.parse(rules.text) == rules
    assert rules.text == "chat:*=300/2m,sails_model_*=100/10m,*=5/30s"


def test_no_rules_means_no_history() -> None:
    rules = HistoryRules.parse("")
    assert not rules
    assert rules.rule_for("chat:1") is None
    assert rules.max_msgs == 0


def test_a_pattern_may_hold_an_equals_sign() -> None:
    rules = HistoryRules.parse("a=b*=10/1h")
    assert rules.rule_for("a=bc") is not None
    assert rules.rules[0].max_age_s == 3600.0


@pytest.mark.parametrize(
    "text", ["chat", "chat=10", "=10/2m", "chat=x/2m", "chat=0/2m", "chat=10/0s", "chat=10/2w"]
)
def test_bad_rules_name_themselves(text: str) -> None:
    with pytest.raises(ConfigError, match="history"):
        HistoryRules.parse(text)


def test_ages() -> None:
    assert parse_age("90") == 90.0
    assert parse_age("250ms") == 0.25
    assert parse_age("1.5h") == 5400.0


def test_offsets_round_trip_and_junk_is_no_offset() -> None:
    assert parse_offset(format_offset("a9fe6ae3e4", 1234)) == ("a9fe6ae3e4", 1234)
    for junk in ("hello", "", "A:1", "ab:", ":1", "ab:1:2", 12, None, ["ab:1"], "ab:-1"):
        assert parse_offset(junk) is None


def test_a_recreated_stream_has_another_epoch() -> None:
    first = epoch_of("s", "2026-12-03T10:00:00.000000001Z")
    assert first == epoch_of("s", "2026-12-03T10:00:00.000000001Z")
    assert first != epoch_of("s", "2026-12-03T10:00:00.000000002Z")
    assert parse_offset(format_offset(first, 1)) is not None


def test_names_and_subjects() -> None:
    assert stream_name("app.prod-1") == "sailcast_history_app_prod-1"
    assert sessions_bucket("sailcast") == "sailcast_sessions_sailcast"
    s = Subjects("app")
    assert s.history("chat:1") == "app.h." + s.room("chat:1").rpartition(".")[2]
    assert s.history_all == "app.h.>"
    assert s.parse(s.history("x")) is None  # gateways never subscribe to it
