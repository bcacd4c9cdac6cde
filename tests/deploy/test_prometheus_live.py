"""Monitoring proven against a real Prometheus (issue 14, Must have 5).

Debian's Prometheus (unpacked into .tools/prometheus by deploy/tools/install.sh) scrapes
two real gateway processes and a publisher's metrics endpoint every second and evaluates
the chart's alert rules (rendered from files/alert-rules.yaml through the chart, `for:`
shortened to 1 s and rate windows to 20 s; thresholds are the chart's defaults) every
second. Real clients and a real worker cause each alert's condition: stalled websocket
clients, sockets refused by a full gateway, a route that raises, sessions presented
after their window, a gateway stopped (SIGSTOP) until NATS cuts it off as a slow
consumer (late deliveries; a history room's messages trimmed before it could repair the
gap), and at last NATS itself stopped. Every Grafana dashboard query must then return a
series through Prometheus' HTTP API, and every alert must be reported `firing`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
import socketio
from prometheus_client import CollectorRegistry, start_http_server

from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher
from publisher.router import Request, Router, RouterService
from shared.errors import TransportError
from tests.deploy.deploy_kit import NAMESPACE, TOOLS, alert_rules, dashboard, dashboard_panels
from tests.deploy.test_alert_rules import ALERTS
from tests.deploy.test_deploy_files import concrete
from tests.helpers import GatewayProcess, RecordingClient, connect_client, start_gateway
from tests.integration.test_slow_clients import StalledClient

pytestmark = pytest.mark.deploy

PROMETHEUS_DIR: Final = TOOLS / "prometheus"
RATE_WINDOW: Final = "20s"
SDK_QUERY: Final = (
    "__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node&__sails_io_sdk_language=javascript"
)
HISTORY: Final = "hist:*=100/10m,lossy=1/1h"
PRESENCE: Final = "pres:*"
RECOVERY_WINDOW_S: Final = 2.0
MAX_CONNECTIONS_B: Final = 3
QUIET_ROOMS: Final = 300
STALLS: Final = 4
# Panels that cannot have data here, and why.
NO_DATA_PANELS: Final = {
    "CPU per gateway (cores)": "cAdvisor's container_* series come from a kubelet; none here",
    "Memory per gateway (working set)": "cAdvisor's container_* series come from a kubelet",
}
PHASE_ONE_ALERTS: Final = frozenset(ALERTS.values()) - {
    "SailcastGatewayNotReady",
    "SailcastGatewayNatsDisconnected",
    "SailcastSessionWriteErrors",
    "SailcastPublisherStoredFailures",
}
# NATS cuts off a client it cannot write to for 1 s (a stopped gateway) instead of the
# default 10 s, so the slow-consumer cut happens within the test's time.
NATS_CONF: Final = 'write_deadline: "1s"\nmax_pending: 1048576\n'


# ------------------------------------------------------------------------ Prometheus
class Prometheus:
    """A prometheus server on a free loopback port with its own temporary storage."""

    def __init__(self, workdir: Path, config: dict[str, Any], rules: dict[str, Any]) -> None:
        binary = PROMETHEUS_DIR / "prometheus"
        if not binary.is_file():
            pytest.skip(f"{binary} is missing: run `make test-tools`")
        (workdir / "rules.yaml").write_text(json.dumps(rules), encoding="utf-8")
        config = {**config, "rule_files": [str(workdir / "rules.yaml")]}
        (workdir / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                str(binary),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "prometheus exited"
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(self.url + "/-/ready", timeout=1).status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError("prometheus did not become ready")

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def wait_for_targets(self, count: int, timeout: float = 20.0) -> None:
        """Until every target has been scraped (Prometheus applies its targets a few
        seconds after start): a counter's increments before its first scrape would be
        invisible to rate()."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if len(self.api("query", query="up == 1")["result"]) == count:
                    return
            time.sleep(0.2)
        raise AssertionError(f"prometheus did not scrape its {count} targets")

    def firing(self) -> set[str]:
        return {
            a["labels"]["alertname"] for a in self.api("alerts")["alerts"] if a["state"] == "firing"
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_config(gateways: dict[str, int], worker_port: int) -> dict[str, Any]:
    """Targets labelled as a ServiceMonitor's scrape labels them (namespace, pod)."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            {
                "job_name": "sailcast-gateway-metrics",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {"namespace": NAMESPACE, "pod": pod},
                    }
                    for pod, port in gateways.items()
                ],
            },
            {
                "job_name": "sailcast-worker",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{worker_port}"],
                        "labels": {"namespace": NAMESPACE, "pod": "worker-0"},
                    }
                ],
            },
        ],
    }


def shipped_rules_made_quick() -> dict[str, Any]:
    """The chart's rules with every `for:` at 1 s and the rate window at 20 s."""
    return alert_rules(
        {"rateWindow": RATE_WINDOW, "alerts": {key: {"for": "1s"} for key in ALERTS}}
    )


# ------------------------------------------------------------------------ raw clients
async def raw_connect(
    port: int, payload: dict[str, Any]
) -> tuple[asyncio.StreamWriter, dict[str, Any]]:
    """An Engine.IO v4 websocket whose Socket.IO CONNECT carries `payload` (the pid and
    offset socket.io-client 4 sends to recover); returns the writer and the CONNECT
    reply (`sid`, `pid`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")

    async def read_text() -> str:
        head = await reader.readexactly(2)
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        return (await reader.readexactly(n)).decode()

    assert (await read_text()).startswith("0{")
    data = ("40" + orjson.dumps(payload).decode()).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    length = struct.pack("!BB", 0x81, 0xFE) + struct.pack("!H", len(data))
    writer.write(length + mask + masked)
    reply = await read_text()
    assert reply.startswith("40{"), reply
    return writer, orjson.loads(reply[2:])


# ------------------------------------------------------------------------ the test
@pytest.fixture
def nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    conf = tmp_path / "nats.conf"
    conf.write_text(NATS_CONF, encoding="utf-8")
    server = EmbeddedNats(extra_args=("-c", str(conf))).start()
    yield server
    server.close()


@pytest.fixture
def gateways(nats: EmbeddedNats, prefix: str) -> Iterator[dict[str, GatewayProcess]]:
    common: dict[str, Any] = {
        "history": HISTORY,
        "history_storage": "memory",
        "presence": PRESENCE,
        "recovery_window_s": RECOVERY_WINDOW_S,
        "log_level": "ERROR",
    }
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(start_gateway, nats.url, prefix, "gwa", max_buffered_bytes=65536, **common)
        b = pool.submit(
            start_gateway, nats.url, prefix, "gwb", max_connections=MAX_CONNECTIONS_B, **common
        )
        started = {"gwa": a.result(), "gwb": b.result()}
    yield started
    for gw in started.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(gw.proc.pid, signal.SIGCONT)
        gw.stop(timeout=5)


@pytest.fixture
async def worker(nats: EmbeddedNats, prefix: str) -> AsyncIterator[tuple[Publisher, int]]:
    """A worker: a publisher exporting its metrics on an HTTP port, serving a router
    with one route that works and one that fails."""
    registry = CollectorRegistry()
    pub = await Publisher.connect(nats.url, prefix=prefix, registry=registry, request_timeout_s=1.0)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    router = Router()

    @router.get("/ok")
    async def ok(req: Request) -> dict[str, str]:
        return {"ok": req.socket_id}

    @router.get("/boom")
    async def boom(req: Request) -> None:
        raise RuntimeError("the worker fails this request")

    service: RouterService = await router.start(pub)
    yield pub, int(server.server_port)
    await service.stop()
    await pub.close()
    server.shutdown()
    thread.join(timeout=5)


async def test_every_dashboard_query_has_data_and_every_alert_fires(
    nats: EmbeddedNats,
    gateways: dict[str, GatewayProcess],
    worker: tuple[Publisher, int],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    pub, worker_port = worker
    gwa, gwb = gateways["gwa"], gateways["gwb"]
    prom = Prometheus(
        tmp_path,
        scrape_config({"gwa": gwa.metrics_port, "gwb": gwb.metrics_port}, worker_port),
        shipped_rules_made_quick(),
    )
    seen: dict[str, float] = {}
    clients: list[RecordingClient] = []
    raw: list[Any] = []
    background: list[asyncio.Future[None]] = []
    nats_stopped = False
    try:
        await asyncio.to_thread(prom.wait_ready)
        await asyncio.to_thread(prom.wait_for_targets, 3)
        background.append(asyncio.ensure_future(watch_alerts(prom, seen, started)))

        a1 = await connect_client(gwa.url)
        b1 = await connect_client(gwb.url)
        sails = await connect_client(f"{gwa.url}?{SDK_QUERY}")
        clients += [a1, b1, sails]
        await pub.sockets.join([a1.sid, b1.sid], ["plain", "hist:chat"])
        # B follows many history rooms, `lossy` last: its catch-up read after a
        # reconnect (gateway/history/feed.py `catch_up`, room by room) reaches `lossy`
        # after the room's next live message has (see stalled_gateway)
        quiet = [f"hist:quiet-{n}" for n in range(QUIET_ROOMS)]
        await pub.sockets.join(b1.sid, quiet)
        for room in quiet:
            await pub.sockets.broadcast(room, "q", 0)
        await pub.sockets.join(b1.sid, "lossy")
        await pub.sockets.broadcast("lossy", "m", {"i": 0})
        await b1.wait_for(lambda ev: any(e == "m" for e, _ in ev))

        await users_members_and_presence(gwa, b1, pub, clients)
        stop_traffic = asyncio.Event()
        traffic = asyncio.ensure_future(steady_traffic(pub, stop_traffic))
        await asyncio.gather(
            virtual_requests(sails),
            refused_connects(gwb),
            slow_clients(gwa, pub, raw),
            recoveries(gwa, pub, raw),
            stalled_gateway(gwb, pub),
        )
        await wait_for_alerts(prom, seen, PHASE_ONE_ALERTS, timeout=30)

        # phase 2: NATS goes away
        stop_traffic.set()
        await traffic
        nats.stop()
        nats_stopped = True
        background.append(asyncio.ensure_future(stored_publishes_while_nats_is_down(pub)))
        await wait_for_alerts(prom, seen, frozenset(ALERTS.values()), timeout=30)
        # every dashboard query, on the live data (the gateways' ops ports still answer)
        empty = dashboard_queries_without_data(prom)
        assert empty == [], empty

        assert set(seen) == set(ALERTS.values())
        elapsed = time.monotonic() - started
        order = ", ".join(
            f"{name} at {at:.1f}s" for name, at in sorted(seen.items(), key=lambda x: x[1])
        )
        print(f"\nprometheus live: every alert fired ({order}); test {elapsed:.1f}s")
    finally:
        for task in background:
            task.cancel()
        for c in clients:
            with contextlib.suppress(Exception):
                await c.disconnect()
        for r in raw:
            with contextlib.suppress(Exception):
                r.close()
        prom.stop()
        if nats_stopped:  # the worker's fixture stops its router and publisher through NATS
            with contextlib.suppress(TransportError):  # its port may have been taken
                nats.start()


async def users_members_and_presence(
    gwa: GatewayProcess, b1: RecordingClient, pub: Publisher, clients: list[RecordingClient]
) -> None:
    """Issue 12's panels: two sockets in a presence room on two gateways (presence
    events, and deltas between the gateways), members and count questions, and a forced
    disconnect by room with a reason (on A: B is kept near its connection limit)."""
    p1, p2 = await connect_client(gwa.url), b1
    clients.append(p1)
    await pub.sockets.join([p1.sid, p2.sid], "pres:lobby")
    # the other member shows in p1's state, or in a diff when the state came first
    await p1.wait_for(lambda ev: sum(e in ("presence", "presence_state") for e, _ in ev) >= 1, 10)
    await p1.wait_for(lambda ev: p2.sid in str(ev), 10)
    assert (await pub.sockets.count("pres:lobby")).sockets == 2
    assert {m.socket_id for m in (await pub.sockets.members("pres:lobby")).members} == {
        p1.sid,
        p2.sid,
    }
    kicked = await connect_client(gwa.url)
    await pub.sockets.join(kicked.sid, "kick")
    assert await pub.sockets.disconnect(room="kick", reason="monitoring test") == 1


async def watch_alerts(prom: Prometheus, seen: dict[str, float], started: float) -> None:
    while True:
        with contextlib.suppress(OSError, AssertionError):
            for name in await asyncio.to_thread(prom.firing):
                seen.setdefault(name, time.monotonic() - started)
        await asyncio.sleep(0.5)


async def wait_for_alerts(
    prom: Prometheus, seen: dict[str, float], wanted: frozenset[str], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not wanted <= set(seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"never firing: {not_firing(prom, wanted - set(seen))}")
        await asyncio.sleep(0.25)


def not_firing(prom: Prometheus, names: frozenset[str]) -> list[str]:
    """Each alert that did not fire, with its rule's health and its expression's
    series now (what to look at when this test fails)."""
    out = []
    for group in prom.api("rules")["groups"]:
        for rule in group["rules"]:
            if rule["name"] in names:
                inner = re.sub(r"\s*>\s*[0-9.e+-]+$", "", rule["query"])
                now = prom.api("query", query=inner)["result"]
                metric = re.findall(r"(sailcast_[a-z_]+)\{", rule["query"])[0]
                hist = prom.api("query", query=f"{metric}[60s]")["result"]
                samples = {r["metric"].get("pod", "?"): r["values"][::5] for r in hist}
                out.append(f"{metric} over the last minute, every 5th sample: {samples}")
                out.append(
                    f"{rule['name']} ({rule['health']} {rule.get('lastError', '')}): "
                    f"{rule['query']} is now {[r['value'][1] for r in now]}"
                )
    return out


def dashboard_queries_without_data(prom: Prometheus) -> list[str]:
    """Every panel target (and template variable query) evaluated now: those that
    return no series, but for the allow-listed panels."""
    queries: list[tuple[str, str]] = [
        (p["title"], t["expr"]) for p in dashboard_panels() for t in p["targets"]
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.sub(r"^label_values\((.*), *\w+\)$", r"\1", variable["definition"])
            queries.append((f"variable {variable['name']}", inner))
    assert len(queries) > 30
    titles = {title for title, _ in queries}
    assert set(NO_DATA_PANELS) <= titles, "an allow-listed panel is gone: update the list"
    empty = []
    for title, expr in queries:
        result = prom.api("query", query=concrete(expr))["result"]
        if not result and title not in NO_DATA_PANELS:
            empty.append(f"{title}: {expr}")
    return empty


# ------------------------------------------------------------------------ conditions
async def steady_traffic(pub: Publisher, stop: asyncio.Event) -> None:
    """Broadcasts to a plain room and a history room on both gateways."""
    i = 0
    while not stop.is_set():
        await pub.sockets.broadcast("plain", "tick", {"i": i})
        await pub.sockets.broadcast("hist:chat", "chat", {"i": i})
        i += 1
        await asyncio.sleep(0.02)


async def virtual_requests(sails: RecordingClient) -> None:
    """io.socket.get from a sails.io.js-like client: half the worker's answers fail."""
    for i in range(40):
        url = "/boom" if i % 2 else "/ok"
        msg = {"method": "get", "headers": {}, "data": {}, "url": url}
        answer = await sails.client.call("get", msg, timeout=10)
        assert answer["statusCode"] == (500 if i % 2 else 200), answer
        await asyncio.sleep(0.05)


async def refused_connects(gwb: GatewayProcess) -> None:
    """Fill gateway B (--max-connections), then keep knocking; and one page from an
    origin the gateway does not accept."""
    held = [await connect_client(gwb.url) for _ in range(MAX_CONNECTIONS_B - 1)]  # + b1
    refused = 0
    for _ in range(10):
        client = socketio.AsyncClient(reconnection=False)
        try:
            await client.connect(gwb.url, transports=["websocket"], wait_timeout=5)
        except socketio.exceptions.ConnectionError:
            refused += 1
        else:
            await client.disconnect()
        await asyncio.sleep(0.2)
    assert refused == 10
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            gwb.url, headers={"Origin": "http://elsewhere.example"}, transports=["websocket"]
        )
    for c in held:
        await c.disconnect()


async def slow_clients(gwa: GatewayProcess, pub: Publisher, raw: list[Any]) -> None:
    """Websocket clients that stop reading while their room gets 50 kB messages."""
    stalled = [await StalledClient.connect(gwa.port) for _ in range(5)]
    raw += stalled
    await pub.sockets.join([s.sid for s in stalled], "bulk")
    for s in stalled:
        s.stop_reading()
    blob = "x" * 50_000
    deadline = time.monotonic() + 20
    while gwa.metric("sailcast_gateway_slow_client_disconnects_total") < len(stalled):
        assert time.monotonic() < deadline, "stalled clients were not cut off"
        for _ in range(20):
            await pub.sockets.broadcast("bulk", "big", blob)
        await pub.flush()
        await asyncio.sleep(0.1)


async def recoveries(gwa: GatewayProcess, pub: Publisher, raw: list[Any]) -> None:
    """Sockets that lose their connection and come back with their session: one in
    time (recovered), three after the recovery window (a fresh session)."""
    sessions = []
    for _ in range(4):
        writer, hello = await raw_connect(gwa.port, {})
        await pub.sockets.join(hello["sid"], "hist:chat")
        sessions.append(hello)
        writer.transport.abort()  # gone without a goodbye: the session stays
    await asyncio.sleep(0.3)
    writer, back = await raw_connect(gwa.port, {"pid": sessions[0]["pid"]})
    raw.append(writer.transport)
    assert back["pid"] == sessions[0]["pid"]  # recovered
    await asyncio.sleep(RECOVERY_WINDOW_S + 2.5)
    for hello in sessions[1:]:  # one per scrape: a new series' first value is no rate
        writer, back = await raw_connect(gwa.port, {"pid": hello["pid"]})
        raw.append(writer.transport)
        assert back["pid"] != hello["pid"]  # expired: a fresh session
        await asyncio.sleep(1.1)


async def stalled_gateway(gwb: GatewayProcess, pub: Publisher) -> None:
    """Gateway B stops (SIGSTOP) while its rooms get messages: when it runs again it
    delivers late (delivery lag), and NATS, unable to write to it, cut it off as a slow
    consumer, so the history room `lossy` (1 message kept) has a gap B cannot repair.
    Whether B notices depends on what reaches it first after its reconnects (see
    below), so up to STALLS times, until B has counted the loss."""
    await asyncio.sleep(2)  # some timely deliveries first
    for _ in range(STALLS):
        await stall_once(gwb, pub)
        await asyncio.sleep(1)
        lost = await asyncio.to_thread(gwb.metrics)
        if any(k.startswith("sailcast_gateway_history_lost_total{") for k in lost):
            return
    raise AssertionError(f"gateway B counted no history loss in {STALLS} stalls")


async def stall_once(gwb: GatewayProcess, pub: Publisher) -> None:
    reconnects = gwb.metric("sailcast_gateway_nats_reconnects_total")
    os.kill(gwb.proc.pid, signal.SIGSTOP)
    try:
        blob = "y" * 100_000
        until = time.monotonic() + 3
        i = 0
        while time.monotonic() < until:
            await pub.sockets.broadcast("lossy", "m", {"i": i, "blob": blob})
            i += 1
            if i % 20 == 0:
                await pub.flush()
            await asyncio.sleep(0.005)
    finally:
        os.kill(gwb.proc.pid, signal.SIGCONT)
    # The room keeps getting messages while B reconnects: the first one B gets after it
    # subscribed again names a previous one B never saw and the stream no longer holds.
    # (Had B's catch-up read of the room come first, it would have handed on the one
    # message kept, chained to B's last: the trimmed ones in between would go unseen.)
    reconnected = asyncio.Event()
    after = asyncio.ensure_future(keep_publishing(pub, "lossy", reconnected))
    deadline = time.monotonic() + 15
    while (
        await asyncio.to_thread(gwb.metric, "sailcast_gateway_nats_reconnects_total") <= reconnects
    ):
        assert time.monotonic() < deadline, "NATS did not cut the stopped gateway off"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    reconnected.set()
    await after


async def keep_publishing(pub: Publisher, room: str, stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        await pub.sockets.broadcast(room, "m", {"after": i})
        i += 1
        await asyncio.sleep(0.01)


async def stored_publishes_while_nats_is_down(pub: Publisher) -> None:
    """A worker keeps broadcasting to a history room while NATS is gone."""
    while True:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pub.sockets.broadcast("hist:chat", "chat", {"down": 1}), 2)
        await asyncio.sleep(0.2)
