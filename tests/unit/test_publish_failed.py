"""PublishFailed, the SyncPublisher's report of queued messages that never reached NATS:
its message names the count and the first failures, and it survives pickling (Celery
sends a task's exception to its result backend)."""

from __future__ import annotations

import pickle

from publisher import FailedPublish, PublishFailed, TransportError
from publisher.failures import MAX_KEPT_FAILURES, FailureBook


def failure(i: int, room: str | None = "lobby") -> FailedPublish:
    cause = TransportError(f"publish failed (broadcast): nats: outbound buffer limit #{i}")
    return FailedPublish("broadcast" if room else "blast", f"ev{i}", room, cause, 1.5e9 + i)


def test_the_message_names_how_many_and_which() -> None:
    err = PublishFailed(1, [failure(1)])
    assert isinstance(err, TransportError)
    assert str(err) == (
        "1 queued publish(es) never reached NATS: broadcast 'ev1' to 'lobby': "
        "publish failed (broadcast): nats: outbound buffer limit #1"
    )


def test_beyond_three_the_message_counts_the_rest() -> None:
    kept = [failure(i) for i in range(5)] + [failure(5, room=None)]
    err = PublishFailed(2000, kept)  # only the first ones are kept; the count is exact
    text = str(err)
    assert text.startswith("2000 queued publish(es) never reached NATS: broadcast 'ev0'")
    assert "'ev2'" in text
    assert "'ev3'" not in text
    assert text.endswith("(and 1997 more)")
    assert err.count == 2000
    assert len(err.failures) == 6
    assert str(err.failures[5]).startswith("blast 'ev5' to everyone: ")


def test_it_survives_pickling() -> None:
    err = PublishFailed(3, [failure(1), failure(2)])
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, PublishFailed)
    assert back.count == 3
    assert [(f.event, f.room, f.failed_at) for f in back.failures] == [
        ("ev1", "lobby", 1.5e9 + 1),
        ("ev2", "lobby", 1.5e9 + 2),
    ]
    assert str(back) == str(err)


def test_the_failure_book_counts_all_keeps_the_first_and_starts_anew() -> None:
    book = FailureBook()
    assert book.take() is None
    for n in range(MAX_KEPT_FAILURES + 5):
        assert book.add(failure(n)) == n + 1
    taken = book.take()
    assert taken is not None
    assert taken.count == MAX_KEPT_FAILURES + 5
    assert len(taken.failures) == MAX_KEPT_FAILURES
    assert [f.event for f in taken.failures[:2]] == ["ev0", "ev1"]
    assert book.count == 0
    assert book.take() is None  # raised once
