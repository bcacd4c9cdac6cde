"""A burst of large broadcasts to a big room must never cost the gateway its NATS
connection (issue 16 #3).

The reported case: 500 clients in one room, 30 broadcasts of ~900 KB in quick
succession; 4 s in, the gateway logged "NATS round trip failed", then "NATS connection
lost", reconnected, and 6 of the 30 messages reached no one. Scaled here to run in
seconds on 2 cores: READERS clients that read as fast as they can (another process),
one python-socketio client in this one, and a burst whose payload x members product
keeps the gateway writing for seconds. Fanout may cut sockets that cannot keep up
(counted); the NATS connection must stay, and every client not cut gets every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

from publisher import Publisher
from tests.faults.faultkit import MonitoredNats, ametric
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.integration

READERS: Final = 150
MESSAGES: Final = 30
PAYLOAD_BYTES: Final = 900_000
EVENT: Final = "burst"


async def test_a_large_fanout_burst_keeps_the_nats_connection(
    monitored_nats: MonitoredNats,
    gateway_factory: Callable[..., GatewayProcess],
    prefix: str,
    client_factory: Any,
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "gateway.log"
    gw = gateway_factory("gw", nats_url=monitored_nats.url, stderr_file=log_file)
    readers = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.faults.burst_readers",
        str(gw.port),
        str(READERS),
        f'42["{EVENT}"',
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert readers.stdin is not None
    assert readers.stdout is not None
    pub = await Publisher.connect(monitored_nats.url, prefix=prefix)
    try:
        sids: list[str] = orjson.loads(await readers.stdout.readline())
        client = await client_factory(gw)
        await pub.sockets.join([*sids, client.sid], "room")
        pad = "x" * PAYLOAD_BYTES
        started = time.monotonic()
        for i in range(MESSAGES):
            await pub.sockets.broadcast("room", EVENT, {"i": i, "pad": pad})
        await pub.flush()
        # the python-socketio client reads slowest of all: once it has the last message
        # (or is cut off), everyone had time to get everything
        with contextlib.suppress(AssertionError):  # what it got is counted below
            await client.wait_for(lambda ev: sum(e == EVENT for e, _ in ev) >= MESSAGES, timeout=45)
        took = time.monotonic() - started
        await asyncio.sleep(0.5)
        readers.stdin.write(b"report\n")
        counts: list[int] = orjson.loads(await readers.stdout.readline())
        got = [d["i"] for e, d in client.events if e == EVENT]
        reconnects = await ametric(gw, "sailcast_gateway_nats_reconnects_total")
        cut = await ametric(gw, "sailcast_gateway_slow_client_disconnects_total")
        dropped = await ametric(gw, 'sailcast_gateway_drops_total{reason="fanout_backlog"}')
        varz = await asyncio.to_thread(monitored_nats.monitor, "/varz")
        log = log_file.read_text()
        starved = log.count("NATS round trip failed")
        lost = log.count("NATS connection lost") + log.count("NATS server unresponsive")
        healthy = [c for c in counts if c >= 0]
        complete = sum(c == MESSAGES for c in healthy)
        print(
            f"{MESSAGES} broadcasts of {PAYLOAD_BYTES // 1000} KB to {READERS + 1} members in "
            f"{took:.1f}s: NATS round trips failed {starved}, connection lost {lost}, "
            f"reconnects {reconnects:.0f}, nats-server slow consumers "
            f"{varz.get('slow_consumers', 0)}; sockets cut as slow {cut:.0f}, messages "
            f"dropped from the fanout backlog {dropped:.0f}; {complete} of {len(healthy)} "
            f"clients not cut got all {MESSAGES} (the python-socketio one: {len(got)})"
        )
        assert starved == 0, "the NATS reader was starved: the round trip failed"
        assert lost == 0, "the gateway lost its NATS connection"
        assert reconnects == 0
        assert varz.get("slow_consumers", 0) == 0
        assert healthy, "every reader was cut: the burst measured nothing"
        assert complete == len(healthy), f"clients not cut missed messages: {sorted(healthy)}"
        assert got == list(range(MESSAGES)), f"the python-socketio client got {got}"
    finally:
        if readers.returncode is None:
            readers.kill()
        await readers.wait()
        await pub.close()
