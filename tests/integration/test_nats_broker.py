"""NatsBroker against a real nats-server (the session fixture runs it with JetStream):
subject-keyed, idempotent subscriptions feeding one handler, the request errors the
core relies on, the connection-state channel, and JetStream usable on the very same
connection (the recovery feature reads streams through `broker.client`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.broker import BrokerEvent
from gateway.broker.headers import encode_headers, header_int, header_value
from gateway.broker.memory import MemoryBroker
from gateway.broker.nats_broker import NatsBroker
from gateway.embedded_nats import EmbeddedNats
from shared.config import NatsSettings, parse_servers
from shared.errors import GatewayTimeout, TransportError

pytestmark = pytest.mark.integration


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def broker(nats_server: EmbeddedNats) -> AsyncIterator[NatsBroker]:
    b = await NatsBroker.connect(
        NatsSettings(servers=parse_servers(nats_server.url)), name="test-broker"
    )
    yield b
    await b.close()


async def test_subscriptions_are_keyed_by_subject_and_feed_one_handler(
    broker: NatsBroker, prefix: str
) -> None:
    got: list[tuple[bytes, bytes, bytes]] = []
    broker.set_handler(lambda subject, reply, data, headers: got.append((subject, reply, data)))
    a, b = f"{prefix}.a", f"{prefix}.b"
    await broker.subscribe(a)
    await broker.subscribe(a)  # idempotent: still one subscription, one delivery
    await broker.subscribe(b)
    assert broker.subscriptions == 2
    await broker.publish(a, b"1")
    await broker.publish(b, b"2", reply="inbox.x")
    await broker.flush()
    await wait_until(lambda: len(got) == 2)
    assert got == [(a.encode(), b"", b"1"), (b.encode(), b"inbox.x", b"2")]

    await broker.unsubscribe(a)
    await broker.unsubscribe(a)  # idempotent
    await broker.unsubscribe(f"{prefix}.never")
    await broker.publish(a, b"3")
    await broker.publish(b, b"4")
    await broker.flush()
    await wait_until(lambda: len(got) == 3)
    await asyncio.sleep(0.05)
    assert got[2] == (b.encode(), b"", b"4")
    assert len(got) == 3
    assert broker.subscriptions == 1


async def test_a_raising_handler_does_not_stop_delivery(broker: NatsBroker, prefix: str) -> None:
    got: list[bytes] = []

    def handler(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if data == b"boom":
            raise RuntimeError("boom")
        got.append(data)

    broker.set_handler(handler)
    await broker.subscribe(f"{prefix}.x")
    for body in (b"boom", b"ok"):
        await broker.publish(f"{prefix}.x", body)
    await broker.flush()
    await wait_until(lambda: got == [b"ok"])


async def test_requests_map_no_responders_and_timeouts(
    broker: NatsBroker, nats_server: EmbeddedNats, prefix: str
) -> None:
    with pytest.raises(TransportError, match="nobody answers"):
        await broker.request(f"{prefix}.nobody", b"x", timeout=1.0)
    other = await NatsBroker.connect(
        NatsSettings(servers=parse_servers(nats_server.url)), name="test-answerer"
    )
    try:
        answering: set[asyncio.Future[None]] = set()

        def answer(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
            if data == b"ping":
                task = asyncio.ensure_future(other.publish(reply.decode(), b"pong"))
                answering.add(task)
                task.add_done_callback(answering.discard)

        other.set_handler(answer)
        await other.subscribe(f"{prefix}.svc")
        await other.flush()
        # A connection made a moment ago can be missed by another's publish right after
        # its SUB + flush (2-4 of 600 in a loop; tests/integration/test_control_refusals.py
        # has the details): "nobody answers" is asked again for up to 1 s, a pong then is
        # still required
        for _ in range(50):
            try:
                pong = await broker.request(f"{prefix}.svc", b"ping", timeout=2.0)
                break
            except TransportError:
                await asyncio.sleep(0.02)
        else:
            pytest.fail(f"nobody answered on {prefix}.svc within 1 s of its subscription")
        assert pong == b"pong"
        with pytest.raises(GatewayTimeout):
            await broker.request(f"{prefix}.svc", b"silence", timeout=0.2)
    finally:
        await other.close()


async def test_subscribe_on_a_closed_broker_raises(broker: NatsBroker, prefix: str) -> None:
    await broker.close()
    with pytest.raises(TransportError):
        await broker.subscribe(f"{prefix}.late")
    await broker.unsubscribe(f"{prefix}.late")  # never raises


async def test_jetstream_works_on_the_brokers_own_connection(
    broker: NatsBroker, prefix: str
) -> None:
    """The recovery feature reads a room's history from JetStream through
    `broker.client`; our direct subscriptions and nats-py's own ones coexist."""
    direct: list[bytes] = []
    broker.set_handler(lambda subject, reply, data, headers: direct.append(data))
    live = f"{prefix}.live"
    await broker.subscribe(live)

    js = broker.client.jetstream()
    stream = f"S_{prefix}"[:60].replace(".", "_")
    await js.add_stream(name=stream, subjects=[f"{prefix}.hist.>"])
    try:
        for i in range(3):
            ack = await js.publish(f"{prefix}.hist.lobby", f"m{i}".encode())
            assert ack.seq == i + 1
        await broker.publish(live, b"direct")
        sub = await js.subscribe(f"{prefix}.hist.lobby", ordered_consumer=True)
        history = [(await sub.next_msg(timeout=2.0)).data for _ in range(3)]
        assert history == [b"m0", b"m1", b"m2"]
        await sub.unsubscribe()
        psub = await js.pull_subscribe(f"{prefix}.hist.lobby", durable=None)
        pulled = await psub.fetch(3, timeout=2.0)
        assert [m.data for m in pulled] == [b"m0", b"m1", b"m2"]
        await broker.flush()
        await wait_until(lambda: direct == [b"direct"])  # JetStream traffic never reached it
    finally:
        await js.delete_stream(stream)


async def test_connection_state_events_come_through_one_channel(prefix: str) -> None:
    """A private nats-server we can stop and restart on the same port."""
    own = EmbeddedNats(jetstream=False).start()
    broker = await NatsBroker.connect(
        NatsSettings(servers=parse_servers(own.url)), name="test-events"
    )
    events: list[BrokerEvent] = []
    got: list[bytes] = []

    async def listen(event: BrokerEvent) -> None:
        events.append(event)

    broker.set_listener(listen)
    broker.set_handler(lambda subject, reply, data, headers: got.append(data))
    try:
        await broker.subscribe(f"{prefix}.x")
        own.stop()
        await wait_until(lambda: BrokerEvent.DISCONNECTED in events, 10)
        assert not broker.connected
        own.start()
        await wait_until(lambda: events[-1:] == [BrokerEvent.RECONNECTED], 15)
        assert broker.connected
        await broker.publish(f"{prefix}.x", b"after")  # resubscribed on reconnect
        await broker.flush()
        await wait_until(lambda: got == [b"after"])
    finally:
        await broker.close()
        own.close()


async def test_the_handler_gets_the_raw_header_block_or_none(
    broker: NatsBroker, prefix: str
) -> None:
    """Headers cross the seam unparsed (the history feed reads two of them); a message
    without headers brings None, as MemoryBroker delivers them too."""
    got: list[tuple[bytes, bytes | None]] = []
    broker.set_handler(lambda subject, reply, data, headers: got.append((data, headers)))
    subject = f"{prefix}.h"
    await broker.subscribe(subject)
    await broker.publish(subject, b"plain")
    await broker.publish(subject, b"headed", headers={"Nats-Sequence": "7", "X-A": "b"})
    await broker.flush()
    await wait_until(lambda: len(got) == 2)
    assert got[0] == (b"plain", None)
    data, block = got[1]
    assert data == b"headed"
    assert block is not None
    assert block.startswith(b"NATS/1.0\r\n")
    assert header_int(block, b"Nats-Sequence") == 7
    assert header_value(block, b"x-a") == b"b"
    assert header_value(block, b"Missing") is None
    memory = MemoryBroker()
    memory_got: list[bytes | None] = []
    memory.set_handler(lambda subject, reply, data, headers: memory_got.append(headers))
    await memory.subscribe(subject)
    await memory.publish(subject, b"headed", headers={"Nats-Sequence": "7", "X-A": "b"})
    assert memory_got == [encode_headers({"Nats-Sequence": "7", "X-A": "b"})]
    assert header_int(memory_got[0] or b"", b"Nats-Sequence") == 7
