"""bench/delivery/scoring.py: delivered %, duplicates, out-of-order and catch-up, as the
delivery benchmark prints them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.delivery.scoring import (
    ClientRecord,
    catch_up,
    expected_numbers,
    percentile,
    score_run,
    score_sequence,
)


def test_a_perfect_sequence_scores_full_delivery() -> None:
    s = score_sequence([1, 2, 3, 4], expected_numbers(4))
    assert (s.expected, s.delivered, s.missing, s.duplicates, s.out_of_order) == (4, 4, 0, 0, 0)


def test_duplicates_count_every_extra_copy_and_are_not_out_of_order() -> None:
    s = score_sequence([1, 2, 2, 3, 2, 1], expected_numbers(3))
    assert s.delivered == 3
    assert s.duplicates == 3
    assert s.out_of_order == 0


def test_a_late_number_is_out_of_order_once() -> None:
    # 3 arrives after 4 and 5 (a replay behind live messages): one out-of-order reception
    s = score_sequence([1, 2, 4, 5, 3, 6], expected_numbers(6))
    assert s.out_of_order == 1
    assert s.delivered == 6


def test_gaps_are_missing_not_out_of_order() -> None:
    s = score_sequence([1, 2, 5, 6], expected_numbers(6))
    assert s.missing == 2
    assert s.out_of_order == 0


def test_failed_publishes_are_not_expected_and_count_as_unexpected_if_received() -> None:
    expected = expected_numbers(5, failed=[3])
    assert sorted(expected) == [1, 2, 4, 5]
    s = score_sequence([1, 2, 3, 4, 5], expected)
    assert (s.expected, s.delivered, s.unexpected) == (4, 4, 1)


@given(st.lists(st.integers(min_value=1, max_value=30), max_size=80))
def test_counts_add_up(received: list[int]) -> None:
    s = score_sequence(received, expected_numbers(30))
    assert s.delivered + s.unexpected + s.duplicates == len(received)
    assert 0 <= s.out_of_order <= s.delivered
    assert s.delivered == len(set(received))


def test_catch_up_is_the_last_missed_message_after_the_reconnect() -> None:
    sent = [0.0, 100.0, 200.0, 300.0, 400.0]  # n = 1..5
    # had 1 and 2, away while 3 and 4 were sent, reconnected at 350; 3 came at 360, 4 at
    # 370 (the replay), 5 live at 410 (sent after the reconnect: not part of catching up)
    received, at = [1, 2, 3, 4, 5], [10.0, 110.0, 360.0, 370.0, 410.0]
    got = catch_up(150.0, 350.0, received, at, sent, expected_numbers(5))
    assert got.missed == 2
    assert got.ms == pytest.approx(20.0)


def test_nothing_missed_is_caught_up_at_once() -> None:
    sent = [0.0, 100.0]
    got = catch_up(120.0, 150.0, [1, 2], [10.0, 110.0], sent, expected_numbers(2))
    assert (got.missed, got.ms) == (0, 0.0)


def test_a_missed_message_that_never_comes_is_never_caught_up() -> None:
    sent = [0.0, 100.0, 200.0, 300.0]
    # reconnected at 250 without resuming: 3 (sent at 200) is lost, 4 arrives live
    got = catch_up(150.0, 250.0, [1, 2, 4], [10.0, 110.0, 310.0], sent, expected_numbers(4))
    assert (got.missed, got.ms) == (1, None)


def test_an_older_loss_does_not_block_a_later_catch_up() -> None:
    sent = [0.0, 100.0, 200.0, 300.0, 400.0]
    # 2 was lost long ago; away at 250 holding up to 3, back at 350: it missed 4
    received, at = [1, 3, 4, 5], [10.0, 210.0, 360.0, 410.0]
    got = catch_up(250.0, 350.0, received, at, sent, expected_numbers(5))
    assert got.missed == 1
    assert got.ms == pytest.approx(10.0)


def test_a_replay_just_before_the_connect_event_is_caught_up_at_once() -> None:
    # socket.io CSR sends the missed packets ahead of its CONNECT reply
    sent = [0.0, 100.0, 200.0, 300.0]
    received, at = [1, 2, 3, 4], [10.0, 110.0, 349.5, 349.7]
    got = catch_up(150.0, 350.0, received, at, sent, expected_numbers(4))
    assert (got.missed, got.ms) == (2, 0.0)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0


def test_score_run_sums_clients_and_counts_reconnects_and_resumes() -> None:
    sent = {"a": [0.0, 100.0, 200.0, 300.0], "b": [0.0, 100.0, 200.0, 300.0]}
    resumed = ClientRecord.from_report(
        {
            "kind": "v4",
            "room": "a",
            "recv": [1, 10, 2, 110, 3, 260, 4, 310],
            "connects": [[0, False, 0], [250, True, 250]],
            "disconnects": [[200, "forced close", True]],
        }
    )
    fresh = ClientRecord.from_report(
        {
            "kind": "sails",
            "room": "b",
            "recv": [1, 10, 2, 110, 4, 310, 4, 311],
            "connects": [[0, False, 0], [250, False, 270]],
            "disconnects": [[200, "forced close", True]],
        }
    )
    run = score_run([resumed, fresh], sent)
    assert (run.clients, run.expected, run.delivered, run.lost) == (2, 8, 7, 1)
    assert run.delivered_pct == pytest.approx(87.5)
    assert run.duplicates == 1
    assert (run.reconnects, run.resumed, run.caught_up, run.missed_while_away) == (2, 1, 1, 2)
    assert run.summary()["caught_up_after_miss"] == 1
    assert run.summary()["catch_up_p50_ms"] == pytest.approx(10.0)


def test_a_reconnect_that_missed_nothing_is_caught_up_but_not_timed() -> None:
    sent = {"a": [0.0, 100.0]}
    calm = ClientRecord.from_report(
        {"kind": "v4", "room": "a", "recv": [1, 10, 2, 110], "connects": [[0, 0], [150, 1]]}
    )
    run = score_run([calm], sent)
    assert (run.caught_up, run.missed_while_away, run.catch_up_ms) == (1, 0, [])
