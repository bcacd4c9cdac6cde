"""The history stream against a real nats-server with JetStream: created once,
reconciled idempotently (also by ten gateways at once), updated when the rules change,
re-publishing stored messages on the room subject with their positions, and a new
epoch when it is recreated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.embedded_nats import EmbeddedNats
from gateway.history.stream import FIRST_SEQ_CACHE_S, HistoryStream
from gateway.settings import HistorySettings
from shared.errors import TransportError
from shared.history import METADATA_KEY, stream_name
from shared.subjects import Subjects
from tests.helpers import GatewayProcess, start_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


def history(text: str = "chat:*=50/2m,*=10/30s", **kw: object) -> HistorySettings:
    return HistorySettings(history=text, history_storage="memory", **kw)  # type: ignore[arg-type]


async def test_created_once_then_a_second_ensure_changes_nothing(
    nc: NatsClient, prefix: str
) -> None:
    subjects = Subjects(prefix)
    first = await HistoryStream.ensure(nc, subjects, history())
    assert first.action == "created"
    assert first.name == stream_name(prefix)
    assert first.max_msgs_per_subject == 50
    assert first.max_age_s == 120
    assert first.rules.text == "chat:*=50/2m,*=10/30s"

    info = await nc.jetstream().stream_info(first.name)
    config = info.config
    assert config.subjects == [f"{prefix}.h.>"]
    assert config.allow_direct is True
    assert config.republish is not None
    assert (config.republish.src, config.republish.dest) == (f"{prefix}.h.>", f"{prefix}.r.>")
    assert (config.metadata or {})[METADATA_KEY] == "chat:*=50/2m,*=10/30s"
    assert config.duplicate_window == pytest.approx(120)

    second = await HistoryStream.ensure(nc, subjects, history())
    assert second.action == "unchanged"
    assert second.epoch == first.epoch
    again = await nc.jetstream().stream_info(first.name)
    assert again.created == info.created
    assert again.config.as_dict() == config.as_dict()


async def test_ten_gateways_starting_at_once_make_one_stream(
    nats_server: EmbeddedNats, prefix: str
) -> None:
    clients = [await nats.connect(nats_server.url) for _ in range(10)]
    try:
        subjects = Subjects(prefix)
        streams = await asyncio.gather(
            *(HistoryStream.ensure(c, subjects, history()) for c in clients)
        )
        assert len({s.epoch for s in streams}) == 1
        names = await clients[0].jetstream().streams_info()
        assert [s.config.name for s in names].count(stream_name(prefix)) == 1
    finally:
        for c in clients:
            await c.close()


async def test_changed_rules_update_the_stream(nc: NatsClient, prefix: str) -> None:
    subjects = Subjects(prefix)
    first = await HistoryStream.ensure(nc, subjects, history("*=10/30s"))
    changed = await HistoryStream.ensure(
        nc, subjects, history("*=300/5m", history_duplicate_window_s=60)
    )
    assert changed.action == "updated"
    assert changed.epoch == first.epoch  # the same stream, so positions stay valid
    assert (changed.max_msgs_per_subject, changed.max_age_s) == (300, 300)
    config = (await nc.jetstream().stream_info(first.name)).config
    assert config.max_msgs_per_subject == 300
    assert config.duplicate_window == pytest.approx(60)
    assert (config.metadata or {})[METADATA_KEY] == "*=300/5m"
    assert await first.refresh() is False  # an older reader sees the new rules
    assert first.rules.text == "*=300/5m"


async def test_a_stored_message_is_republished_with_its_position(
    nc: NatsClient, prefix: str
) -> None:
    subjects = Subjects(prefix)
    stream = await HistoryStream.ensure(nc, subjects, history())
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await got.put(msg)

    await nc.subscribe(subjects.room("chat:1"), cb=on_msg)
    await nc.flush()
    js = nc.jetstream()
    for body in (b"one", b"two"):
        ack = await js.publish(subjects.history("chat:1"), body)
        assert ack.stream == stream.name
    await js.publish(subjects.history("other"), b"elsewhere")
    await js.publish(subjects.history("chat:1"), b"three")

    received = [await asyncio.wait_for(got.get(), 5) for _ in range(3)]
    assert [m.data for m in received] == [b"one", b"two", b"three"]
    positions = [
        (int(m.headers["Nats-Sequence"]), int(m.headers["Nats-Last-Sequence"]))
        for m in received
        if m.headers is not None
    ]
    assert positions == [(1, 0), (2, 1), (4, 2)]  # seq 3 went to the room "other"
    assert await stream.refresh() is False
    assert await stream.first_seq() == 1
    assert stream.messages == 4
    assert stream.bytes > 0


async def test_a_recreated_stream_has_another_epoch(nc: NatsClient, prefix: str) -> None:
    subjects = Subjects(prefix)
    stream = await HistoryStream.ensure(nc, subjects, history())
    before = stream.epoch
    assert await stream.refresh() is False
    await nc.jetstream().delete_stream(stream.name)
    assert await stream.refresh() is True  # gone: created again, as a new instance
    assert stream.epoch != before
    other = await HistoryStream.ensure(nc, subjects, history())
    assert other.epoch == stream.epoch


async def test_without_jetstream_the_error_names_it(prefix: str) -> None:
    server = EmbeddedNats(jetstream=False).start()
    try:
        client = await nats.connect(server.url)
        try:
            with pytest.raises(TransportError, match="JetStream is not enabled"):
                await HistoryStream.ensure(client, Subjects(prefix), history())
        finally:
            await client.close()
    finally:
        server.close()


async def test_gateways_with_history_create_it_at_start_and_report_it(
    gateway_factory: Callable[..., GatewayProcess], nc: NatsClient, prefix: str
) -> None:
    subjects = Subjects(prefix)
    first = gateway_factory("gw0", history="*=20/1m", history_storage="memory")
    info = await nc.jetstream().stream_info(stream_name(prefix))
    assert (info.config.metadata or {})[METADATA_KEY] == "*=20/1m"
    assert info.config.max_msgs_per_subject == 20
    assert first.metrics()["sailcast_gateway_history_stream_messages"] == 0
    await nc.jetstream().publish(subjects.history("lobby"), b"stored")
    second = gateway_factory("gw1", history="*=20/1m", history_storage="memory")
    assert second.metrics()["sailcast_gateway_history_stream_messages"] == 1
    assert second.metrics()["sailcast_gateway_history_stream_bytes"] > 0
    again = await nc.jetstream().stream_info(stream_name(prefix))
    assert again.created == info.created  # the second gateway found it, changed nothing


def test_a_gateway_with_history_and_no_jetstream_says_so(tmp_path: Path, prefix: str) -> None:
    server = EmbeddedNats(jetstream=False).start()
    log = tmp_path / "gateway.log"
    try:
        with pytest.raises(RuntimeError, match="exited with 1"):
            start_gateway(server.url, prefix, "gw0", stderr_file=log, history="*=10/1m")
    finally:
        server.close()
    assert "JetStream is not enabled" in log.read_text()


async def test_first_seq_is_read_once_for_many_askers_and_follows_the_stream(
    nc: NatsClient, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    subjects = Subjects(prefix)
    stream = await HistoryStream.ensure(nc, subjects, history("*=2/1m"))
    js = nc.jetstream()
    for n in range(3):  # the room keeps 2: the first one is dropped
        await js.publish(subjects.history("chat:1"), str(n).encode())
    await asyncio.sleep(FIRST_SEQ_CACHE_S)  # what ensure read is stale now
    reads = 0
    read = stream.refresh

    async def counted() -> bool:
        nonlocal reads
        reads += 1
        return await read()

    monkeypatch.setattr(stream, "refresh", counted)
    firsts = await asyncio.gather(*(stream.first_seq() for _ in range(20)))
    assert firsts == [2] * 20
    assert reads == 1  # askers arriving during a read wait for it
