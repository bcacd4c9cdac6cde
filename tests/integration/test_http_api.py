"""The HTTP server API driven from outside Python: curl against two real gateway
processes on a real nats-server, real Socket.IO clients receiving what it sent."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import GatewayProcess, RecordingClient

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")

KEYS = "old-key-7f3a,new-key-91c2"
OLD_KEY, NEW_KEY = KEYS.split(",")
TRANSCRIPTS = Path(__file__).resolve().parents[2] / "build" / "http-api"


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict), self.body
        error: dict[str, Any] = self.body["error"]
        return error


@dataclass
class Curl:
    """curl, as a shell user would run it; every call kept for the transcript."""

    transcript: list[str] = field(default_factory=list)

    async def post(
        self,
        gw: GatewayProcess,
        method: str,
        body: Any = None,
        *,
        key: str | None = NEW_KEY,
        raw: bytes | None = None,
        headers: tuple[str, ...] = (),
        verb: str = "POST",
    ) -> Answer:
        data = raw if raw is not None else orjson.dumps(body if body is not None else {})
        args = ["curl", "-sS", "-i", "-X", verb, f"http://127.0.0.1:{gw.api_port}/api/{method}"]
        if key is not None:
            args += ["-H", f"Authorization: apikey {key}"]
        for h in headers:
            args += ["-H", h]
        args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        out = await asyncio.to_thread(
            subprocess.run, args, input=data, capture_output=True, timeout=15, check=True
        )
        head, _, payload = out.stdout.decode().partition("\r\n\r\n")
        while head.startswith("HTTP/1.1 100"):  # curl's Expect: 100-continue, big bodies
            head, _, payload = payload.partition("\r\n\r\n")
        status_line, *lines = head.split("\r\n")
        hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
        shown = data.decode() if len(data) < 300 else f"<{len(data)} bytes>"
        self.transcript.append(
            f"$ curl -s -X {verb} localhost:$API_PORT/api/{method}"
            + (f" -H 'Authorization: apikey {key}'" if key is not None else "")
            + "".join(f" -H '{h}'" for h in headers)
            + f" -d '{shown}'\n{status_line}\n{payload}\n"
        )
        try:
            parsed: Any = orjson.loads(payload) if payload else None
        except orjson.JSONDecodeError:
            parsed = payload
        return Answer(int(status_line.split()[1]), parsed, hdrs)

    def save(self, name: str) -> None:
        """For reading (the README's session comes from it): build/http-api/<name>.txt."""
        TRANSCRIPTS.mkdir(parents=True, exist_ok=True)
        (TRANSCRIPTS / f"{name}.txt").write_text("\n".join(self.transcript))


@pytest.fixture
def curl() -> Curl:
    return Curl()


@pytest.fixture
def api_gateways(gateway_factory: Callable[..., GatewayProcess]) -> list[GatewayProcess]:
    return [gateway_factory(f"api{i}", api_key=KEYS, api_port=0) for i in range(2)]


async def _rooms(curl: Curl, gw: GatewayProcess, sid: str) -> set[str]:
    answer = await curl.post(gw, "rooms", {"socket_id": sid})
    assert answer.status == 200, answer.body
    return set(answer.body["result"])


async def _received(client: RecordingClient, event: str, n: int = 1) -> list[Any]:
    await client.wait_for(lambda ev: len([e for e, _ in ev if e == event]) >= n)
    return client.named(event)


async def test_every_endpoint_with_curl(
    api_gateways: list[GatewayProcess], client_factory: Callable[..., Any], curl: Curl
) -> None:
    gwa, gwb = api_gateways
    a: RecordingClient = await client_factory(gwa)
    b: RecordingClient = await client_factory(gwb)

    # join: on the other gateway's API too; the rooms endpoint confirms it
    assert (await curl.post(gwa, "join", {"socket_ids": a.sid, "rooms": ["lobby"]})).status == 200
    join_b = await curl.post(gwb, "join", {"socket_ids": [b.sid], "rooms": "lobby"})
    assert join_b.status == 200
    assert join_b.body == {"result": None}
    assert await _rooms(curl, gwb, a.sid) == {a.sid, "lobby"}
    assert await _rooms(curl, gwa, b.sid) == {b.sid, "lobby"}

    # broadcast with omit, then to both
    chat = {"rooms": ["lobby"], "event": "chat", "data": {"text": "hi"}, "omit": [b.sid]}
    assert (await curl.post(gwb, "broadcast", chat)).status == 200
    assert (await curl.post(gwb, "broadcast", {"rooms": "lobby", "event": "chat2"})).status == 200
    assert await _received(a, "chat") == [{"text": "hi"}]
    await _received(b, "chat2")
    assert b.named("chat") == []  # omitted (chat2 was published after it, so chat is not late)
    assert await _received(a, "chat2") == [None]

    # blast reaches every socket on every gateway; the default event is Sails' "message"
    assert (await curl.post(gwa, "blast", {"event": "news", "data": [1, 2]})).status == 200
    assert await _received(a, "news") == [[1, 2]]
    assert await _received(b, "news") == [[1, 2]]
    assert (await curl.post(gwa, "blast", {"data": "plain"})).status == 200
    assert await _received(b, "message") == ["plain"]

    # room members, cluster-wide
    add = {"source_room": "lobby", "dest_rooms": ["vip", "press"]}
    assert (await curl.post(gwa, "add_room_members_to_rooms", add)).status == 200
    assert await _rooms(curl, gwa, b.sid) == {b.sid, "lobby", "vip", "press"}
    remove = {"source_room": "lobby", "dest_rooms": "press"}
    assert (await curl.post(gwb, "remove_room_members_from_rooms", remove)).status == 200
    assert await _rooms(curl, gwa, a.sid) == {a.sid, "lobby", "vip"}

    # leave, leave_all
    assert (await curl.post(gwa, "leave", {"socket_ids": a.sid, "rooms": ["vip"]})).status == 200
    assert await _rooms(curl, gwa, a.sid) == {a.sid, "lobby"}
    assert (await curl.post(gwa, "leave_all", {"room": "lobby"})).status == 200
    assert await _rooms(curl, gwb, a.sid) == {a.sid}
    assert await _rooms(curl, gwb, b.sid) == {b.sid}

    # batch: in order, each answered on its own
    batch = await curl.post(
        gwb,
        "batch",
        {
            "commands": [
                {"method": "join", "params": {"socket_ids": a.sid, "rooms": "r1"}},
                {"method": "broadcast", "params": {"rooms": "r1", "event": "in_r1"}},
                {"method": "rooms", "params": {"socket_id": a.sid}},
                {"method": "rooms", "params": {"socket_id": "no-such-sid"}},
                {"method": "nope"},
                {"method": "leave", "params": {"socket_ids": a.sid, "rooms": [7]}},
            ]
        },
    )
    assert batch.status == 200
    replies = batch.body["replies"]
    assert [r["status"] for r in replies] == [200, 200, 200, 404, 404, 400]
    assert sorted(replies[2]["result"]) == sorted([a.sid, "r1"])
    assert replies[3]["error"]["code"] == "no_such_socket"
    assert replies[4]["error"]["code"] == "unknown_method"
    assert replies[4]["error"]["field"] == "commands[4].method"
    assert replies[5]["error"]["code"] == "invalid_room_name"
    assert replies[5]["error"]["field"] == "commands[5].params.rooms"
    await _received(a, "in_r1")

    # disconnect, wherever the socket is
    a_sid = a.sid
    assert (await curl.post(gwb, "disconnect", {"socket_id": a_sid})).status == 200
    for _ in range(100):
        if not a.client.connected:
            break
        await asyncio.sleep(0.05)
    assert not a.client.connected
    gone = await curl.post(gwa, "rooms", {"socket_id": a_sid})
    assert gone.status == 404
    assert gone.error["code"] == "no_such_socket"

    samples = gwa.metrics()
    assert samples['sailcast_gateway_api_requests_total{method="blast",outcome="ok"}'] == 2
    assert samples['sailcast_gateway_api_requests_total{method="rooms",outcome="ok"}'] >= 3
    assert samples['sailcast_gateway_api_request_duration_seconds_count{method="join"}'] == 1
    curl.save("endpoints")


async def test_refusals_errors_limits_and_idempotency(
    api_gateways: list[GatewayProcess], client_factory: Callable[..., Any], curl: Curl
) -> None:
    gw = api_gateways[0]
    a: RecordingClient = await client_factory(gw)
    body = {"rooms": a.sid, "event": "ping"}

    # keys: none, wrong, wrong scheme → 401; both rotation keys work
    assert (await curl.post(gw, "broadcast", body, key=None)).status == 401
    wrong = await curl.post(gw, "broadcast", body, key="guess")
    assert (wrong.status, wrong.error["code"]) == (401, "unauthorized")
    bearer = await curl.post(
        gw, "broadcast", body, key=None, headers=(f"Authorization: Bearer {NEW_KEY}",)
    )
    assert bearer.status == 401
    assert (await curl.post(gw, "broadcast", body, key=OLD_KEY)).status == 200
    assert (await curl.post(gw, "broadcast", body, key=NEW_KEY)).status == 200
    assert await _received(a, "ping", 2) == [None, None]

    # 4xx naming the bad field
    async def refused(method: str, payload: Any, status: int, code: str, fld: str = "") -> None:
        answer = await curl.post(gw, method, payload)
        assert (answer.status, answer.error["code"]) == (status, code), answer.body
        assert answer.error.get("field", "") == fld, answer.body
        assert answer.error["message"]

    await refused("broadcast", {"rooms": 5}, 400, "invalid_field", "rooms")
    await refused("broadcast", {"rooms": [""]}, 400, "invalid_room_name", "rooms")
    await refused("broadcast", {"rooms": ["ok", 3]}, 400, "invalid_room_name", "rooms")
    await refused("broadcast", {"event": "x"}, 400, "missing_field", "rooms")
    await refused("broadcast", {"rooms": "r", "room": "r"}, 400, "unknown_field", "room")
    await refused("broadcast", {"rooms": "r", "event": 7}, 400, "invalid_field", "event")
    await refused("join", {"socket_ids": "", "rooms": "r"}, 400, "invalid_socket_id", "socket_ids")
    await refused("leave_all", {"room": ["a"]}, 400, "invalid_field", "room")
    await refused("broadcast", [1], 400, "invalid_body")
    await refused("rooms", {"socket_id": "nobody"}, 404, "no_such_socket")
    await refused("join", {"socket_ids": "nobody", "rooms": "r"}, 404, "no_such_socket")
    await refused("publish", {}, 404, "unknown_method", "method")
    await refused("batch", {"commands": 1}, 400, "invalid_field", "commands")
    bad_json = await curl.post(gw, "broadcast", raw=b"{nope")
    assert (bad_json.status, bad_json.error["code"]) == (400, "invalid_json")
    not_post = await curl.post(gw, "broadcast", body, verb="GET")
    assert (not_post.status, not_post.error["code"]) == (405, "method_not_allowed")
    assert not_post.headers["allow"] == "POST"

    # size: the body is bounded by --max-payload-bytes (1 MiB by default)
    big = {"rooms": "r", "event": "big", "data": "x" * (1024 * 1024 + 1)}
    too_big = await curl.post(gw, "broadcast", big)
    assert (too_big.status, too_big.error["code"]) == (413, "body_too_large")
    # a body just within the limit, whose message (the body plus the envelope) is not
    near = {"rooms": "r", "event": "big", "data": ""}
    near["data"] = "x" * (1024 * 1024 - len(orjson.dumps(near)))
    assert len(orjson.dumps(near)) == 1024 * 1024
    answer = await curl.post(gw, "broadcast", near)
    assert (answer.status, answer.error["code"]) == (413, "payload_too_large")
    assert answer.error["field"] == "data"

    # idempotency: the same key answers the first answer without applying it again
    keyed = {"rooms": a.sid, "event": "once", "data": 1}
    first = await curl.post(gw, "broadcast", keyed, headers=("Idempotency-Key: k-1",))
    again = await curl.post(gw, "broadcast", keyed, headers=("Idempotency-Key: k-1",))
    other = await curl.post(gw, "broadcast", keyed, headers=("Idempotency-Key: k-2",))
    assert (first.status, again.status, other.status) == (200, 200, 200)
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.body == first.body
    assert await _received(a, "once", 2) == [1, 1]
    # the same key with another body is refused, not replayed
    reused = await curl.post(
        gw, "broadcast", {**keyed, "data": 2}, headers=("Idempotency-Key: k-1",)
    )
    assert (reused.status, reused.error["code"]) == (422, "idempotency_key_reused")
    assert reused.error["field"] == "Idempotency-Key"
    # two at once with one key: applied once, both answered 200
    both = await asyncio.gather(
        *(curl.post(gw, "broadcast", keyed, headers=("Idempotency-Key: k-3",)) for _ in "ab")
    )
    assert [x.status for x in both] == [200, 200]
    assert sorted("idempotent-replayed" in x.headers for x in both) == [False, True]
    await curl.post(gw, "broadcast", {"rooms": a.sid, "event": "after"})
    await _received(a, "after")
    assert a.named("once") == [1, 1, 1]  # the replays added nothing

    samples = gw.metrics()
    api = "sailcast_gateway_api_requests_total"
    assert samples[f'{api}{{method="broadcast",outcome="unauthorized"}}'] == 3
    assert samples[f'{api}{{method="broadcast",outcome="replayed"}}'] == 2
    assert samples[f'{api}{{method="broadcast",outcome="idempotency_key_reused"}}'] == 1
    assert samples[f'{api}{{method="unknown",outcome="unknown_method"}}'] == 1
    assert samples[f'{api}{{method="rooms",outcome="no_such_socket"}}'] == 1
    curl.save("errors")


async def test_the_api_is_off_without_a_key(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gw = gateway_factory("nokey", api_port=0)
    assert gw.api_port == 0
