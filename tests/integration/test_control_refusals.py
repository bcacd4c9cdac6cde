"""The publisher's side of the control protocol against what a gateway may answer: a
refusal from one gateway on `gw.all` fails the call naming that gateway (once every
gateway has answered), and a socket request's refusal codes map to the documented
errors. The "gateway" here is a NatsBroker on the real nats-server answering by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.broker.nats_broker import NatsBroker
from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher
from shared.config import NatsSettings, parse_servers
from shared.control import (
    AddMembers,
    Applied,
    ErrorCode,
    Refused,
    Reply,
    Request,
    decode_request,
    encode_reply,
)
from shared.errors import LimitExceeded, NoSuchSocket, TransportError

pytestmark = pytest.mark.integration

Answer = Callable[[str, Request], Reply]
StartFake = Callable[[list[str], Answer], Awaitable[None]]


@pytest.fixture
async def fake_gateway(nats_server: EmbeddedNats) -> AsyncIterator[StartFake]:
    brokers: list[NatsBroker] = []
    tasks: set[asyncio.Future[None]] = set()
    prober = await NatsBroker.connect(
        NatsSettings(servers=parse_servers(nats_server.url)), name="fake-gateway-prober"
    )

    async def start(subjects: list[str], answer: Answer) -> None:
        broker = await NatsBroker.connect(
            NatsSettings(servers=parse_servers(nats_server.url)), name="fake-gateway"
        )
        brokers.append(broker)
        probe = f"_fake.ready.{len(brokers)}.{id(broker)}"
        ready = asyncio.Event()

        def handle(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
            if subject.decode() == probe:
                ready.set()
                return
            body = encode_reply(answer(subject.decode(), decode_request(data)))
            task = asyncio.ensure_future(broker.publish(reply.decode(), body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        broker.set_handler(handle)
        for subject in [*subjects, probe]:
            await broker.subscribe(subject)
        await broker.flush()
        # Ready when a message from ANOTHER connection arrives, on the subscription made
        # last: a connection seconds old can miss a publish made right after its
        # SUB + flush (2-4 of 600 fresh connections in a loop on nats-server 2.15.1 and
        # nats-py 2.16, with plain nats-py subscriptions too); the request under test
        # would then reach only some of the fakes.
        for _ in range(100):
            await prober.publish(probe, b"")
            await prober.flush()
            try:
                await asyncio.wait_for(ready.wait(), 0.02)
                return
            except TimeoutError:
                continue
        raise AssertionError(f"fake gateway on {subjects} never received from another connection")

    yield start
    for broker in [*brokers, prober]:
        await broker.close()


async def test_a_gateway_refusing_a_cluster_request_fails_the_call_naming_it(
    publisher: Publisher, fake_gateway: StartFake
) -> None:
    peers = ("g1", "g2")
    await fake_gateway([publisher.subjects.gateways], lambda s, r: Applied("g1", peers, n=2))
    await fake_gateway(
        [publisher.subjects.gateways],
        lambda s, r: Refused(ErrorCode.INTERNAL, "NATS refused dst", "g2", peers),
    )
    with pytest.raises(TransportError, match=r"g2 refused it \(internal: NATS refused dst\)"):
        await publisher.sockets.add_room_members_to_rooms("src", "dst")


async def test_every_gateway_applying_it_returns_and_refused_joins_raise_limit(
    publisher: Publisher, fake_gateway: StartFake
) -> None:
    seen: list[Request] = []

    def answer(subject: str, req: Request) -> Reply:
        seen.append(req)
        return Applied("g1", ("g1",), n=3, refused=2)

    await fake_gateway([publisher.subjects.gateways], answer)
    with pytest.raises(LimitExceeded, match="2 join"):
        await publisher.sockets.add_room_members_to_rooms("src", ["a", "b"])
    assert seen == [AddMembers("src", ("a", "b"))]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (ErrorCode.NO_SUCH_SOCKET, NoSuchSocket),
        (ErrorCode.LIMIT, LimitExceeded),
        (ErrorCode.INTERNAL, TransportError),
        (ErrorCode.BAD_REQUEST, TransportError),
    ],
)
async def test_socket_request_refusals_map_to_errors(
    publisher: Publisher,
    fake_gateway: StartFake,
    code: ErrorCode,
    error: type[Exception],
) -> None:
    await fake_gateway([publisher.subjects.socket("s1")], lambda s, r: Refused(code, "why"))
    with pytest.raises(error):
        await publisher.sockets.join("s1", "lobby")
