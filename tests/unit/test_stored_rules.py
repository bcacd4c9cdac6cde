"""How a publisher keeps its history rules when reading them fails: a missing stream or
no JetStream at all means no history; JetStream busy (a failover) or a timeout keeps
the rules read last, so history is not switched off by a blip. No NATS: the JetStream
context is a stand-in that answers what a server would."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError, ServiceUnavailableError

from publisher.stats import PublisherStats
from publisher.stored import StoredPublishing
from shared.history import METADATA_KEY, HistoryRules


class Answers:
    """`stream_info` answers from a list: a rules text, or an exception to raise."""

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)

    async def stream_info(self, name: str) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return SimpleNamespace(config=SimpleNamespace(metadata={METADATA_KEY: answer}))


def stored(*answers: str | Exception) -> tuple[StoredPublishing, list[HistoryRules]]:
    applied: list[HistoryRules] = []
    js = Answers(*answers)
    nc: Any = SimpleNamespace(jetstream=lambda **_: js)
    s = StoredPublishing(
        nc, prefix="p", timeout_s=1.0, stats=PublisherStats(), apply=applied.append
    )
    return s, applied


async def test_a_blip_keeps_the_rules_and_a_missing_stream_drops_them() -> None:
    s, applied = stored(
        "chat:*=5/1m",
        ServiceUnavailableError(code=503, description="JetStream system temporarily unavailable"),
        NatsTimeoutError(),
        "chat:*=5/1m,*=1/10s",
        NotFoundError(code=404, description="stream not found"),
    )
    assert (await s.read_rules()).text == "chat:*=5/1m"
    assert (await s.read_rules()).text == "chat:*=5/1m"  # JetStream busy: kept
    assert (await s.read_rules()).text == "chat:*=5/1m"  # timeout: kept
    assert (await s.read_rules()).text == "chat:*=5/1m,*=1/10s"
    assert not await s.read_rules()  # the stream is gone: no history
    assert [r.text for r in applied] == ["chat:*=5/1m", "chat:*=5/1m,*=1/10s", ""]


async def test_no_jetstream_at_all_means_no_history() -> None:
    s, _ = stored("chat:*=5/1m", ServiceUnavailableError())  # no responders: no code
    await s.read_rules()
    assert not await s.read_rules()


async def test_rules_that_do_not_parse_mean_no_history() -> None:
    s, _ = stored("chat:*=lots")
    assert not await s.read_rules()


async def test_failed_reads_come_back_sooner_then_back_off_to_the_period() -> None:
    s, _ = stored("*=1/1m", *[NatsTimeoutError() for _ in range(5)], "*=1/1m")
    await s.read_rules()
    waits = [s._next_read_s()]
    for _ in range(5):
        await s.read_rules()
        waits.append(s._next_read_s())
    await s.read_rules()
    waits.append(s._next_read_s())
    assert waits == [10.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
