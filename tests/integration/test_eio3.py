"""Engine.IO v3 / Socket.IO v2 clients (socket.io-client 2, sails.io.js 1.x) on
gateway.engine, next to v4 ones.

The engine runs in-process on a real aiohttp server (tests/engine_server.py); clients
are raw aiohttp websockets and HTTP requests speaking the v3 wire format byte for
byte, next to a real python-socketio (EIO4) client.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import socketio

from gateway.engine import CloseReason, payloads, sio_codec
from tests.engine_server import REJECTED, EngineServer, StartEngine, start_engine

pytestmark = pytest.mark.integration

__all__ = ["start_engine"]  # the fixture

SDK_QUERY = (
    "__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node&__sails_io_sdk_language=javascript"
)
WAIT_S = 5.0

Server = EngineServer


@pytest_asyncio.fixture
async def start_server(start_engine: StartEngine) -> AsyncIterator[StartEngine]:
    yield start_engine


StartServer = StartEngine


class Eio3Ws:
    """A raw EIO3 websocket client: frames in, frames out, nothing hidden."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def recv(self, timeout_s: float = WAIT_S) -> str | bytes:
        msg = await self.ws.receive(timeout=timeout_s)
        if msg.type is aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type is aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        raise ConnectionError(f"websocket ended: {msg.type!r}")

    async def recv_text(self) -> str:
        frame = await self.recv()
        assert isinstance(frame, str), frame
        return frame

    async def send(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def open_packet(self) -> dict[str, Any]:
        frame = await self.recv_text()
        assert frame[0] == "0", frame
        data: dict[str, Any] = json.loads(frame[1:])
        return data

    async def closed(self, timeout_s: float) -> bool:
        """Whether the server closes the websocket within ``timeout_s`` (frames are skipped)."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    msg = await self.ws.receive()
                    if msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        return True
        except TimeoutError:
            return False


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def ws_connect(http: aiohttp.ClientSession, srv: Server, query: str) -> Eio3Ws:
    ws = await http.ws_connect(f"{srv.ws_base}/socket.io/?{query}", autoping=True)
    return Eio3Ws(ws)


def parse_text_payload(body: str) -> list[str]:
    """Split ``<len>:<packet>...`` counting JavaScript (UTF-16) units, as v3 clients do."""
    units = body.encode("utf-16-le")
    packets = []
    i = 0
    while i < len(units):
        colon = units.index(":".encode("utf-16-le"), i)
        while (colon - i) % 2:
            colon = units.index(":".encode("utf-16-le"), colon + 1)
        n = int(units[i:colon].decode("utf-16-le"))
        start = colon + 2
        packets.append(units[start : start + 2 * n].decode("utf-16-le"))
        i = start + 2 * n
    return packets


def js_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def frame(packet: str) -> str:
    return f"{js_length(packet)}:{packet}"


async def poll(http: aiohttp.ClientSession, srv: Server, query: str) -> list[str]:
    async with http.get(srv.url(query)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        return parse_text_payload(await resp.text())


async def post(http: aiohttp.ClientSession, srv: Server, query: str, body: str | bytes) -> int:
    headers = {
        "Content-Type": "application/octet-stream"
        if isinstance(body, bytes)
        else "text/plain;charset=UTF-8"
    }
    async with http.post(srv.url(query), data=body, headers=headers) as resp:
        return resp.status


async def polling_handshake(
    http: aiohttp.ClientSession, srv: Server, extra: str = ""
) -> tuple[str, list[str]]:
    """Open a v3 polling session; return its sid and every packet up to the ``40``."""
    packets = await poll(http, srv, f"EIO=3&transport=polling&{SDK_QUERY}{extra}")
    open_data = json.loads(packets[0][1:])
    sid = open_data["sid"]
    if "40" not in packets:
        packets += await poll(http, srv, f"EIO=3&transport=polling&sid={sid}")
    return sid, packets


# --- websocket transport -------------------------------------------------------------


async def test_websocket_open_packet_and_automatic_default_namespace_connect(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(ping_interval_s=25, ping_timeout_s=20)
    client = await ws_connect(http, srv, f"EIO=3&transport=websocket&{SDK_QUERY}")

    open_data = await client.open_packet()
    assert list(open_data) == ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]
    assert open_data["upgrades"] == []
    assert open_data["pingInterval"] == 25000
    assert open_data["pingTimeout"] == 20000
    assert isinstance(open_data["sid"], str)
    # the v2 client never sends 40 for "/": the server connects it, with no {"sid"}
    assert await client.recv_text() == "40"

    # socket.io 2: the socket id *is* the engine.io sid (Sails compares them)
    sid, query, auth = srv.connects[0]
    assert (sid, auth) == (open_data["sid"], None)
    assert "EIO=3" in query.split("&")  # handlers see the real query string
    assert "__sails_io_sdk_version=1.2.1" in query.split("&")

    await client.send('421["whoami"]')
    assert await client.recv_text() == f'431["{open_data["sid"]}"]'


async def test_websocket_event_emit_and_acks_both_ways(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    client = await ws_connect(http, srv, "EIO=3&transport=websocket")
    await client.open_packet()
    assert await client.recv_text() == "40"

    await client.send('42["echo",{"msg":"hi","n":[1,2]}]')
    assert await client.recv_text() == '42["echoed",{"msg":"hi","n":[1,2]}]'

    await client.send('427["ack","a",{"b":1}]')
    assert await client.recv_text() == '437["a",{"b":1}]'

    # an ack from the client answers nothing the server asked: ignored, not fatal
    await client.send('435["stray"]')
    await client.send('428["whoami"]')
    assert await client.recv_text() == f'438["{srv.connects[0][0]}"]'
    # events named like lifecycle events are dropped, and never reach the gateway
    await client.send('429["disconnect"]')
    await client.send('4210["ack","after"]')
    assert await client.recv_text() == '4310["after"]'
    assert srv.disconnects.empty()


async def test_websocket_client_pings_server_pongs_and_never_pings(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(ping_interval_s=0.5, ping_timeout_s=0.5)
    client = await ws_connect(http, srv, "EIO=3&transport=websocket")
    await client.open_packet()
    assert await client.recv_text() == "40"

    # stay alive well past pingInterval + pingTimeout by pinging, as socket.io-client 2 does
    for _ in range(10):
        await client.send("2")
        assert await client.recv_text() == "3"  # never a server "2" in between
        await asyncio.sleep(0.2)
    await client.send("2probe")
    assert await client.recv_text() == "3probe"
    assert srv.disconnects.empty()

    # then go silent: the server closes after pingInterval + pingTimeout
    assert await client.closed(timeout_s=4.0)
    sid, reason = await asyncio.wait_for(srv.disconnects.get(), WAIT_S)
    assert sid == srv.connects[0][0]
    assert reason is CloseReason.PING


async def test_websocket_binary_frames_carry_the_type_byte(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    client = await ws_connect(http, srv, "EIO=3&transport=websocket")
    await client.open_packet()
    assert await client.recv_text() == "40"

    await client.send('451-["echo",{"_placeholder":true,"num":0}]')
    await client.send(b"\x04\x01\x02\x03")
    assert await client.recv_text() == '451-["echoed",{"_placeholder":true,"num":0}]'
    assert await client.recv() == b"\x04\x01\x02\x03"

    # a base64 attachment (clients without binary websockets) is accepted as well
    await client.send('451-["echo",{"_placeholder":true,"num":0}]')
    await client.send("b4CQgH")
    assert await client.recv_text() == '451-["echoed",{"_placeholder":true,"num":0}]'
    assert await client.recv() == b"\x04\x09\x08\x07"


async def test_other_namespaces_are_refused_and_a_second_default_connect_is_ignored(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """The gateway serves the default namespace only: a v2 CONNECT to another (with its
    query) gets the v2 CONNECT_ERROR for that namespace; the socket stays."""
    srv = await start_server()
    client = await ws_connect(http, srv, "EIO=3&transport=websocket")
    eio_sid = (await client.open_packet())["sid"]
    assert await client.recv_text() == "40"

    await client.send("40/chat?token=abc&x=1")
    assert await client.recv_text() == '44/chat,"Invalid namespace"'
    await client.send('42/chat,3["whoami"]')  # an event for a namespace it is not in
    # a second CONNECT for "/" from a v3 client is ignored, not a second socket
    await client.send("40")
    await client.send("40/?token=1")
    await client.send('421["whoami"]')
    assert await client.recv_text() == f'431["{eio_sid}"]'
    assert [c[0] for c in srv.connects] == [eio_sid]


async def test_rejected_connect_gets_v2_error_packet(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    client = await ws_connect(http, srv, "EIO=3&transport=websocket&reject=1")
    await client.open_packet()
    assert await client.recv_text() == f'44"{REJECTED}"'
    # the v2 client is not told otherwise: the transport is closed after a grace period
    assert await client.closed(timeout_s=3.0)
    assert srv.connects == []
    assert srv.disconnects.empty()  # never connected, so never disconnected


async def test_invalid_websocket_packet_closes_the_session(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    client = await ws_connect(http, srv, "EIO=3&transport=websocket")
    await client.open_packet()
    assert await client.recv_text() == "40"
    await client.send("abc")
    assert await client.closed(timeout_s=WAIT_S)


# --- polling transport and upgrade ---------------------------------------------------


async def test_polling_handshake_messages_and_heartbeat(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(ping_interval_s=25, ping_timeout_s=20)
    sid, packets = await polling_handshake(http, srv)
    open_data = json.loads(packets[0][1:])
    assert open_data["upgrades"] == ["websocket"]
    assert packets[1:] == ["40"]
    assert srv.connects[0][0] == sid

    query = f"EIO=3&transport=polling&sid={sid}"
    # lengths count UTF-16 units: "€" is 1, "😀" is 2
    text = "€ and 😀"
    body = frame(f'42["echo","{text}"]') + frame("2")
    assert await post(http, srv, query, body) == 200
    got = await poll(http, srv, query)
    while len(got) < 2:
        got += await poll(http, srv, query)
    got.sort()  # "3" (the pong) and the event, in either order
    assert got[0] == "3"
    assert got[1].startswith('42["echoed",')
    assert json.loads(got[1][2:]) == ["echoed", text]

    assert await post(http, srv, query, frame('421["ack",1]')) == 200
    assert await poll(http, srv, query) == ["431[1]"]


async def test_polling_raw_bytes_match_the_v3_spec(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    async with http.get(srv.url("EIO=3&transport=polling")) as resp:
        raw = await resp.text()
    # open packet then "2:40", each as <length>:<packet>, in one response
    match = re.fullmatch(r"(\d+):(0\{.*\})2:40", raw)
    assert match, raw
    assert int(match.group(1)) == len(match.group(2))


async def test_polling_binary_payloads(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    attachment_event = '451-["echo",{"_placeholder":true,"num":0}]'

    # a client with XHR2 gets the binary payload form
    sid, _ = await polling_handshake(http, srv)
    query = f"EIO=3&transport=polling&sid={sid}"
    assert await post(http, srv, query, frame(attachment_event) + frame("b4AQIDBA==")) == 200
    async with http.get(srv.url(query)) as resp:
        assert resp.headers["Content-Type"] == "application/octet-stream"
        raw = await resp.read()
    text = attachment_event.replace("echo", "echoed").encode()
    assert raw == bytes([0, *map(int, str(len(text))), 255]) + text + bytes(
        [1, 5, 255, 4, 1, 2, 3, 4]
    )

    # ... and may post one
    binary_post = bytes([0, *map(int, str(len(attachment_event))), 255]) + attachment_event.encode()
    binary_post += bytes([1, 3, 255, 4, 9, 9])
    assert await post(http, srv, query, binary_post) == 200
    async with http.get(srv.url(query)) as resp:
        assert (await resp.read()).endswith(bytes([1, 3, 255, 4, 9, 9]))

    # a b64=1 client gets base64 packets in the text form
    sid, _ = await polling_handshake(http, srv, "&b64=1")
    query = f"EIO=3&transport=polling&sid={sid}&b64=1"
    assert await post(http, srv, query, frame(attachment_event) + frame("b4AQIDBA==")) == 200
    got = await poll(http, srv, query)
    while len(got) < 2:
        got += await poll(http, srv, query)
    assert got == [attachment_event.replace("echo", "echoed"), "b4AQIDBA=="]


async def test_polling_upgrade_to_websocket(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    sid, _ = await polling_handshake(http, srv)
    query = f"EIO=3&transport=polling&sid={sid}"

    pending_poll = asyncio.create_task(poll(http, srv, query))
    await asyncio.sleep(0.1)
    client = await ws_connect(http, srv, f"EIO=3&transport=websocket&sid={sid}")
    await client.send("2probe")
    assert await client.recv_text() == "3probe"
    assert await asyncio.wait_for(pending_poll, WAIT_S) == ["6"]  # "1:6" ends the poll
    await client.send("5")

    await client.send('42["echo","upgraded"]')
    assert await client.recv_text() == '42["echoed","upgraded"]'
    await client.send("2")
    assert await client.recv_text() == "3"
    async with http.get(srv.url(query)) as resp:
        assert resp.status == 400  # polling is over for this session


async def test_polling_ping_timeout_and_invalid_payload_close_the_session(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(ping_interval_s=0.3, ping_timeout_s=0.3)
    sid, _ = await polling_handshake(http, srv)
    await asyncio.sleep(1.5)  # no ping for longer than pingInterval + pingTimeout
    _sid, reason = await asyncio.wait_for(srv.disconnects.get(), WAIT_S)
    assert reason is CloseReason.PING

    sid, _ = await polling_handshake(http, srv)
    query = f"EIO=3&transport=polling&sid={sid}"
    assert await post(http, srv, query, "abc") == 400
    async with http.get(srv.url(query)) as resp:
        assert resp.status == 400


async def test_polling_client_close_ends_the_pending_poll_at_once(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(ping_interval_s=25, ping_timeout_s=20)
    sid, _ = await polling_handshake(http, srv)
    query = f"EIO=3&transport=polling&sid={sid}"
    pending_poll = asyncio.create_task(poll(http, srv, query))
    await asyncio.sleep(0.1)
    assert await post(http, srv, query, frame("1")) == 200  # engine.io CLOSE
    # answered with a NOOP now, not after pingInterval + pingTimeout (45 s)
    assert await asyncio.wait_for(pending_poll, 2.0) == ["6"]
    assert await asyncio.wait_for(srv.disconnects.get(), WAIT_S) == (sid, CloseReason.CLIENT)
    async with http.get(srv.url(query)) as resp:
        assert resp.status == 400


async def test_polling_jsonp(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    srv = await start_server()
    async with http.get(srv.url("EIO=3&transport=polling&j=3")) as resp:
        script = await resp.text()
    match = re.fullmatch(r'___eio\[3\]\((".*")\);', script)
    assert match, script
    packets = parse_text_payload(json.loads(match.group(1)))
    sid = json.loads(packets[0][1:])["sid"]
    assert packets[1] == "40"

    query = f"EIO=3&transport=polling&sid={sid}&j=3"
    text = "line\nbreak and a literal \\n"
    packet = "42" + json.dumps(["echo", text], separators=(",", ":"))
    # what engine.io-client 3 does before a JSONP post (newlines would not survive
    # a form field): backslash-n becomes backslash-newline, then newline becomes \n
    escaped = frame(packet).replace("\\n", "\\\n").replace("\n", "\\n")
    form = urllib.parse.urlencode({"d": escaped})
    async with http.post(
        srv.url(query), data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    ) as resp:
        assert resp.status == 200
    async with http.get(srv.url(query)) as resp:
        script = await resp.text()
    match = re.fullmatch(r"___eio\[3\]\((.*)\);", script)
    assert match, script
    [echoed] = parse_text_payload(json.loads(match.group(1)))
    assert json.loads(echoed[2:]) == ["echoed", text]


# --- EIO4 is unchanged ---------------------------------------------------------------


@pytest.mark.parametrize("transports", [["websocket"], ["polling"], ["polling", "websocket"]])
async def test_eio4_python_socketio_client_alongside_eio3(
    start_server: StartServer, http: aiohttp.ClientSession, transports: list[str]
) -> None:
    srv = await start_server()
    v3 = await ws_connect(http, srv, "EIO=3&transport=websocket")
    await v3.open_packet()
    assert await v3.recv_text() == "40"

    client = socketio.AsyncClient()
    received: asyncio.Queue[Any] = asyncio.Queue()
    client.on("echoed", received.put_nowait)
    await client.connect(srv.base, transports=transports, wait_timeout=WAIT_S)
    try:
        assert client.eio.transport() == transports[-1] or transports == ["polling", "websocket"]
        # EIO4: socket id and engine.io sid differ, CONNECT carries the sid
        assert client.get_sid() != client.eio.sid
        assert await client.call("whoami", timeout=WAIT_S) == client.get_sid()
        await client.emit("echo", {"v": 4})
        assert await asyncio.wait_for(received.get(), WAIT_S) == {"v": 4}
        assert await client.call("ack", "x", timeout=WAIT_S) == "x"
        # a broadcast reaches both protocol generations
        news: asyncio.Queue[Any] = asyncio.Queue()
        client.on("news", news.put_nowait)
        srv.broadcast("news", b'{"all":true}')  # one shared packet for both generations
        assert await v3.recv_text() == '42["news",{"all":true}]'
        assert await asyncio.wait_for(news.get(), WAIT_S) == {"all": True}
    finally:
        await client.disconnect()


async def test_eio4_raw_websocket_heartbeat_is_still_server_initiated(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(ping_interval_s=0.3, ping_timeout_s=1)
    client = await ws_connect(http, srv, "EIO=4&transport=websocket")
    open_data = await client.open_packet()
    assert open_data["maxPayload"] > 0
    await client.send("40")
    connect = await client.recv_text()
    assert connect.startswith('40{"sid":')
    assert json.loads(connect[2:])["sid"] != open_data["sid"]
    assert await client.recv_text() == "2"  # the server pings in v4
    await client.send("3")


async def test_eio4_polling_uses_record_separator_framing(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    async with http.get(srv.url("EIO=4&transport=polling")) as resp:
        body = await resp.text()
    assert body.startswith('0{"sid":')  # no "<length>:" prefix in v4
    sid = json.loads(body[1:])["sid"]
    query = f"EIO=4&transport=polling&sid={sid}"
    assert await post(http, srv, query, '40\x1e42["echo",1]') == 200
    async with http.get(srv.url(query)) as resp:
        first = await resp.text()
    assert first.startswith('40{"sid":')


# --- refusals, as engine.io answers them ------------------------------------------------


async def test_unsupported_versions_transports_and_sessions_are_refused(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    cases = {
        "EIO=2&transport=polling": (5, "Unsupported protocol version"),
        "transport=polling": (5, "Unsupported protocol version"),
        "EIO=3&transport=abc": (0, "Transport unknown"),
        "EIO=4&transport=polling&sid=nope": (1, "Session ID unknown"),
        "EIO=3&transport=websocket": (3, "Invalid websocket upgrade"),  # no Upgrade header
    }
    for query, (code, message) in cases.items():
        async with http.get(srv.url(query)) as resp:
            assert resp.status == 400, query
            assert await resp.json() == {"code": code, "message": message}, query
    async with http.post(srv.url("EIO=4&transport=polling"), data=b"x") as resp:
        assert resp.status == 400
        assert await resp.json() == {"code": 2, "message": "Bad handshake method"}


# --- the v3 codecs on their own ------------------------------------------------------


def test_text_payload_round_trip_counts_utf16_units() -> None:
    pkts: list[payloads.Packet] = ['42["x","😀€"]', b"\x00\xff"]
    encoded = payloads.encode_text_payload(pkts)
    assert encoded == '13:42["x","😀€"]6:b4AP8='
    assert payloads.decode_text_payload(encoded.encode()) == pkts
    assert payloads.encode_text_payload([]) == "0:"
    for bad in ("abc", "5:4hi", "2:9x", "1:", ":4", "3:b5AA"):
        with pytest.raises(ValueError):  # noqa: PT011 - the codec raises ValueError by contract
            payloads.decode_text_payload(bad)


def test_binary_payload_round_trip() -> None:
    pkts: list[payloads.Packet] = ["4€", b"\x01\x02\x03\x04"]
    encoded = payloads.encode_binary_payload(pkts)
    # the engine.io v3 spec's own example
    assert encoded == bytes([0, 4, 255, 0x34, 0xE2, 0x82, 0xAC, 1, 5, 255, 4, 1, 2, 3, 4])
    assert payloads.decode_binary_payload(encoded) == pkts


def test_v4_payload_round_trip() -> None:
    pkts: list[payloads.Packet] = ['42["x"]', b"\x01\x02", "2"]
    encoded = payloads.encode_v4(pkts)
    assert encoded == '42["x"]\x1ebAQI=\x1e2'
    assert payloads.decode_v4(encoded.encode()) == pkts
    assert payloads.decode_v4(b"") == []
    with pytest.raises(ValueError):  # noqa: PT011 - the codec raises ValueError by contract
        payloads.decode_v4(b"x")


def test_socketio_v2_and_v4_connect_packets() -> None:
    assert sio_codec.connect_reply(3, {"sid": "abc"}) == "40"
    assert sio_codec.connect_reply(4, {"sid": "abc"}) == '40{"sid":"abc"}'
    assert sio_codec.connect_error(4, "no") == '44{"message":"no"}'
    assert sio_codec.connect_error(3, "no") == '44"no"'
    assert sio_codec.connect_error(3, "Invalid namespace", "/a") == '44/a,"Invalid namespace"'
    pkt = sio_codec.decode("0/chat?t=1")
    assert (pkt.type, pkt.namespace, pkt.has_data) == (0, "/chat?t=1", False)
    pkt = sio_codec.decode('0{"token":"x","pid":"p","offset":"o"}')
    assert (pkt.namespace, pkt.data) == ("/", {"token": "x", "pid": "p", "offset": "o"})
    pkt = sio_codec.decode('51-/a,12["x",{"_placeholder":true,"num":0}]')
    assert (pkt.type, pkt.attachments, pkt.namespace, pkt.id) == (5, 1, "/a", 12)
    assert sio_codec.reconstruct(pkt.data, [b"\x01"]) == ["x", b"\x01"]
    assert sio_codec.encode_data(sio_codec.EVENT, ["e", b"\x02"]) == [
        '451-["e",{"_placeholder":true,"num":0}]',
        b"\x02",
    ]


def test_socketio_codec_refuses_what_is_not_a_packet() -> None:
    deep = "2" + "[" * 5000 + "]" * 5000  # deeper than orjson takes: refused, no RecursionError
    for bad in ("", "9", "5x-[]", "2[", deep, "599-[]"):
        with pytest.raises(ValueError):  # noqa: PT011 - the codec raises ValueError by contract
            sio_codec.decode(bad)
    pkt = sio_codec.decode('51-["x",{"_placeholder":true,"num":3}]')
    with pytest.raises(ValueError, match="placeholder"):
        sio_codec.reconstruct(pkt.data, [])
