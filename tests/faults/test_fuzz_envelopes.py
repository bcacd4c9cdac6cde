"""Fuzzing what arrives over NATS: bodies published raw (a plain NATS client, as a
worker in another language would) to the subjects a gateway listens on — a room with a
local member, `blast`, the multi-room subject `mr`, a socket's request subject,
`gw.all`, heartbeats and the gateway's own subject.

The gateway stays up and ready, counts every data message the reference decoder
(shared.envelope.decode_data) rejects and every heartbeat that is not JSON as
`drops_total{reason="malformed"}`, exactly, answers every request that asked for an
answer, keeps delivering valid messages to a healthy client, and once the sacrificial
socket the requests played with is gone, its gauges and the subscriptions the NATS
server holds for it are back at their baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import nats
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.peers import Peers
from publisher import Publisher
from shared.envelope import decode_data
from shared.errors import MalformedEnvelope
from shared.subjects import Subjects
from tests.faults.faultkit import MonitoredNats, RawWebSocket, wait_until
from tests.helpers import GatewayProcess, RecordingClient, connect_client

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("SAILCAST_FUZZ_EXAMPLES", "300"))
DATA_TARGETS = ("room", "blast", "multi")
"""Subjects that carry room/blast/multi-room messages (shared.envelope.decode_data)."""
EXAMPLE_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 5.0

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
ROOMS = ["feed", "side", "other", "a.b", "*", ">", "é", "x" * 1025, "", "=41"]
SAFE_EVENTS = ["m", "message", "e" * 200, "", "sails:parseError", "__marker__"]


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


@st.composite
def metas(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([b"", b"{", b"[]", b"null", b"1", b"\xff\xfe", b'{"v":1']))
    meta: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        meta["v"] = draw(st.sampled_from([1, 1, 1, 1, 2, 0, "1", None, 1.0, True]))
    if draw(st.integers(0, 9)):
        meta["k"] = draw(st.sampled_from(["bc", "bc", "bl", "bl", "mr", "mr", "x", "", None, 1]))
    if draw(st.booleans()):
        meta["ts"] = draw(
            st.one_of(
                st.just(time.time()),
                st.floats(allow_nan=False, allow_infinity=False),
                st.integers(-(2**63), 2**63 - 1),
                st.sampled_from(["now", None, True, [], {}]),
            )
        )
    if draw(st.integers(0, 3)):
        meta["r"] = draw(
            st.one_of(
                st.lists(st.sampled_from(ROOMS), max_size=4),
                st.sampled_from(["feed", None, 1, [1], [["feed"]], {}]),
            )
        )
    if draw(st.booleans()):
        meta["o"] = draw(
            st.one_of(st.lists(st.text(max_size=12), max_size=3), st.sampled_from([None, "x", [1]]))
        )
    if draw(st.booleans()):
        meta["seq"] = draw(json_values)
    meta.update(draw(st.dictionaries(st.text(max_size=5), json_values, max_size=2)))
    return _dumps(meta)


@st.composite
def args(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 5))
    if choice <= 2:
        event = draw(st.sampled_from(SAFE_EVENTS))
        return _dumps([event, *draw(st.lists(json_values, max_size=2))])
    if choice == 3:
        return _dumps(draw(json_values))
    if choice == 4:
        return draw(st.sampled_from([b"[", b"[]", b"[1]", b'"m"', b"{}", b"", b'["m"] x', b"\xff"]))
    return draw(st.binary(max_size=60))


@st.composite
def data_bodies(draw: st.DrawFn) -> bytes:
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(st.binary(max_size=200))
    if shape == 1:  # big, up to a third of NATS' default max_payload
        return draw(metas()) + b"\n" + b'["m","' + b"z" * draw(st.integers(1, 300_000)) + b'"]'
    sep = draw(st.sampled_from([b"\n"] * 8 + [b"\r\n", b"\n\n", b""]))
    return draw(metas()) + sep + draw(args())


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 7)) == 0:
        return draw(st.one_of(st.binary(max_size=100), st.builds(_dumps, json_values)))
    req: dict[str, Any] = {"v": draw(st.sampled_from([1, 1, 1, 1, 2, "1"]))}
    if draw(st.integers(0, 9)):
        # never "disconnect": it would end the healthy client's sacrificial peer early,
        # and the point is what the requests do to a socket that stays
        req["k"] = draw(
            st.sampled_from(["join", "leave", "rooms", "addm", "remm", "leaveall", "ping", "x", 1])
        )
    room_lists = st.one_of(
        st.lists(st.sampled_from([r for r in ROOMS if r != "feed"]), max_size=4),
        st.sampled_from([None, "side", [1], [""], []]),
    )
    if draw(st.booleans()):
        req["rooms"] = draw(room_lists)
    if draw(st.booleans()):
        # never a room the healthy client is in: remm/leaveall on those would take it out
        req["src"] = draw(st.sampled_from(["side", "other", "victim", "", None, 1, "a.b"]))
    if draw(st.booleans()):
        req["dst"] = draw(st.one_of(room_lists, st.just(["feed"])))
    req.update(draw(st.dictionaries(st.text(max_size=5), json_values, max_size=2)))
    return _dumps(req)


heartbeats = st.one_of(
    st.binary(max_size=60),
    st.builds(_dumps, json_values),
    st.builds(
        lambda peer, hello, down: _dumps({"id": peer, "hello": hello, "down": down}),
        st.sampled_from(["ghost", "", 1, None, "envfuzz"]),
        st.booleans(),
        st.booleans(),
    ),
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """(target, body, with a reply inbox)"""
    target = draw(
        st.sampled_from(
            ["room"] * 4
            + ["blast"] * 2
            + ["multi"] * 2
            + ["socket"] * 3
            + ["all"] * 2
            + ["hb", "id"]
        )
    )
    if target in DATA_TARGETS:
        body = draw(data_bodies())
    elif target in ("socket", "all"):
        body = draw(requests())
    elif target == "hb":
        body = draw(heartbeats)
    else:
        body = draw(st.binary(max_size=60))
    return target, body, draw(st.booleans())


def malformed_data(body: bytes) -> bool:
    try:
        decode_data(body)
    except MalformedEnvelope:
        return True
    return False


def malformed_heartbeat(body: bytes) -> bool:
    try:
        Peers("oracle", 1.0).observe(body)
    except ValueError:
        return True
    return False


class Rig:
    def __init__(self, gw: GatewayProcess, server: MonitoredNats, pub: Publisher) -> None:
        self.gw, self.server, self.pub = gw, server, pub
        self.subjects = Subjects(pub.subjects.prefix)
        self.nc: Any = None
        self.healthy: RecordingClient | None = None
        self.victim: RecordingClient | None = None
        self.expected_malformed = 0
        self.sent: dict[str, int] = {}
        self.answered = 0
        self.examples = 0

    def subject(self, target: str) -> str:
        assert self.victim is not None
        s = self.subjects
        return {
            "room": s.room("feed"),
            "blast": s.blast,
            "multi": s.multi_room,
            "socket": s.socket(self.victim.sid),
            "all": s.gateways,
            "hb": s.heartbeat,
            "id": s.gateway(self.gw.gateway_id),
        }[target]

    def malformed(self) -> float:
        return self.gw.metric('sailcast_gateway_drops_total{reason="malformed"}')

    def gauges(self) -> dict[str, float]:
        m = self.gw.metrics()
        return {
            "connections": m.get("sailcast_gateway_connections", 0.0),
            "rooms": m.get("sailcast_gateway_rooms", 0.0),
            "subscriptions": m.get("sailcast_gateway_broker_subscriptions", 0.0),
            "nats": float(self.server.subscriptions_of(f"sailcast-gateway-{self.gw.gateway_id}")),
        }

    async def probe(self) -> None:
        assert self.healthy is not None
        n = len(self.healthy.named("probe"))
        await self.pub.sockets.broadcast("feed", "probe", {"n": n})
        await self.healthy.wait_for(lambda ev: len([e for e in ev if e[0] == "probe"]) > n, 10)

    async def one(self, case: tuple[str, bytes, bool]) -> None:
        target, body, with_reply = case
        self.sent[target] = self.sent.get(target, 0) + 1
        if target in DATA_TARGETS and malformed_data(body):
            self.expected_malformed += 1
        if target == "hb" and malformed_heartbeat(body):
            self.expected_malformed += 1
        subject = self.subject(target)
        if with_reply and target in ("socket", "all", "id"):
            # a request that asks for an answer gets one (ok or an error), never silence
            msg = await self.nc.request(subject, body, timeout=REQUEST_TIMEOUT_S)
            assert isinstance(orjson.loads(msg.data), dict)
            self.answered += 1
        else:
            await self.nc.publish(subject, body)
        self.examples += 1
        assert self.gw.proc.poll() is None, "the gateway process died"
        if self.examples % 25 == 0:
            await self.probe()


@contextlib.asynccontextmanager
async def envelope_rig(
    server: MonitoredNats, gateway_factory: Callable[..., GatewayProcess], prefix: str
) -> Any:
    gw = gateway_factory("envfuzz", nats_url=server.url)
    pub = await Publisher.connect(server.url, prefix=prefix)
    rig = Rig(gw, server, pub)
    try:
        rig.nc = await nats.connect(server.url, name="fuzzer")
        rig.healthy = await connect_client(gw.url)
        await pub.sockets.join(rig.healthy.sid, "feed")
        await rig.probe()
        yield rig
    finally:
        for c in (rig.healthy, rig.victim):
            if c is not None:
                await c.disconnect()
        if rig.nc is not None:
            await rig.nc.close()
        await pub.close()
        gw.stop()


async def test_fuzz_envelopes(
    monitored_nats: MonitoredNats, gateway_factory: Callable[..., GatewayProcess], prefix: str
) -> None:
    async with envelope_rig(monitored_nats, gateway_factory, prefix) as rig:
        base = await asyncio.to_thread(rig.gauges)
        rig.victim = await connect_client(rig.gw.url)  # what the requests act on
        await rig.pub.sockets.join(rig.victim.sid, "side")
        malformed_before = rig.malformed()
        loop = asyncio.get_running_loop()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(case=cases())
        def fuzz(case: tuple[str, bytes, bool]) -> None:
            async def bounded() -> None:
                async with asyncio.timeout(EXAMPLE_TIMEOUT_S):
                    await rig.one(case)

            asyncio.run_coroutine_threadsafe(bounded(), loop).result()

        started = time.monotonic()
        await asyncio.to_thread(fuzz)
        elapsed = time.monotonic() - started
        await rig.nc.flush()
        await rig.probe()  # after everything the fuzzer sent (one connection, in order)

        counted = rig.malformed() - malformed_before
        assert counted == rig.expected_malformed, (
            f"drops_total{{malformed}} grew by {counted}, the reference decoder rejects "
            f"{rig.expected_malformed}"
        )
        assert rig.gw.http_status("/healthz") == 200
        assert rig.gw.http_status("/readyz") == 200
        assert rig.healthy is not None
        assert rig.healthy.client.connected
        assert rig.victim.client.connected, "no request disconnected the victim"
        await rig.victim.disconnect()
        settle = await wait_until(
            lambda: rig.gauges() == base, 10, "gauges and NATS subscriptions back to baseline"
        )
        m = rig.gw.metrics()
        control: dict[str, int] = {}
        for k, v in m.items():
            if k.startswith("sailcast_gateway_control_requests_total{"):
                outcome = k.split('outcome="', 1)[1].split('"', 1)[0]
                control[outcome] = control.get(outcome, 0) + int(v)
        print(
            f"\nfuzz envelopes: {rig.examples} raw NATS messages in {elapsed:.1f}s "
            f"({', '.join(f'{k} {v}' for k, v in sorted(rig.sent.items()))}); gateway alive "
            f"and ready; drops_total{{malformed}} +{counted:.0f} = what the reference decoder "
            f"rejects; {rig.answered} requests with a reply inbox all answered; control "
            f"outcomes {control}; back to baseline {settle:.2f}s after the victim left"
        )


# -- targeted cases -----------------------------------------------------------------------


async def raw_nats_publish(port: int, subject: bytes, reply: bytes, body: bytes) -> None:
    """A PUB a well-behaved client library cannot send (any bytes in the reply subject)."""
    loop = asyncio.get_running_loop()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        s.recv(4096)  # INFO
        line = b"PUB " + subject + b" " + reply + b" " + str(len(body)).encode() + b"\r\n"
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n' + line + body + b"\r\nPING\r\n")
        got = await loop.run_in_executor(None, s.recv, 4096)
        assert b"PONG" in got, got


async def test_reply_subject_not_utf8_keeps_control_loop(
    monitored_nats: MonitoredNats, gateway_factory: Callable[..., GatewayProcess], prefix: str
) -> None:
    async with envelope_rig(monitored_nats, gateway_factory, prefix) as rig:
        assert rig.healthy is not None
        subject = rig.subjects.gateways.encode()
        await raw_nats_publish(rig.server.port, subject, b"_INBOX.\xff\xfe", b'{"v":1,"k":"ping"}')
        await asyncio.sleep(0.3)
        started = time.monotonic()
        try:
            await rig.pub.sockets.join(rig.healthy.sid, "after")
            outcome = f"answered in {time.monotonic() - started:.2f}s"
        except Exception as exc:
            outcome = f"{type(exc).__name__} after {time.monotonic() - started:.1f}s"
        ready = rig.gw.http_status("/readyz")
        print(
            f"\nrequest with a non-UTF-8 reply subject on gw.all, then a join: {outcome}; "
            f"/readyz {ready}"
        )
        assert outcome.startswith("answered")


async def test_reserved_event_published_raw_is_dropped(
    monitored_nats: MonitoredNats, gateway_factory: Callable[..., GatewayProcess], prefix: str
) -> None:
    async with envelope_rig(monitored_nats, gateway_factory, prefix) as rig:
        ws = await RawWebSocket.open(rig.gw.port)
        sid = await ws.eio_connect()
        await rig.pub.sockets.join(sid, "feed")
        before = rig.malformed()
        meta = _dumps({"v": 1, "k": "bc", "ts": time.time(), "r": ["feed"]})
        await rig.nc.publish(rig.subjects.room("feed"), meta + b'\n["disconnect","bye"]')
        await rig.nc.flush()
        await rig.probe()
        frames = await ws.drain(0.5)
        ws.abort()
        delivered = [p for _op, p in frames if p.startswith(b'42["disconnect"')]
        print(f"\nraw envelope with event 'disconnect': delivered to the client {len(delivered)}x")
        assert not delivered
        assert rig.malformed() == before + 1


async def test_join_with_an_invalid_room_name(
    monitored_nats: MonitoredNats, gateway_factory: Callable[..., GatewayProcess], prefix: str
) -> None:
    """A raw join naming a room the subject grammar cannot encode (over 1,024 bytes) is
    refused as a whole and leaves no half-joined room behind."""
    async with envelope_rig(monitored_nats, gateway_factory, prefix) as rig:
        assert rig.healthy is not None
        sid = rig.healthy.sid
        subject = rig.subjects.socket(sid)
        body = _dumps({"v": 1, "k": "join", "rooms": ["ok-before", "x" * 1025, "ok-after"]})
        reply = orjson.loads((await rig.nc.request(subject, body, timeout=5)).data)
        rooms = await rig.pub.sockets.rooms(sid)
        print(f"\njoin with a 1,025-byte room name: reply {reply}; socket's rooms now {rooms}")
        assert reply["ok"] is False
        assert "x" * 1025 not in rooms, "in a room it can never receive from"
