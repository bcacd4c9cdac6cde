"""`sailcast dev` (what `make run` starts): embedded NATS, a gateway and the demo worker
come up, a client is served by all three, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
import socketio

from publisher import SyncPublisher
from shared.history import METADATA_KEY, parse_offset, stream_name
from shared.subjects import Subjects

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def sailcast_command() -> list[str]:
    """The `sailcast` entry point `make run` uses, as installed in this virtualenv."""
    installed = Path(sys.executable).parent / "sailcast"
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "gateway"]


def still_running(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if Path(f"/proc/{p}").exists()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


class Dev:
    def __init__(self, tmp: Path) -> None:
        self.out_path = tmp / "dev.out"
        self._out = self.out_path.open("wb")
        env = dict(os.environ, SAILCAST_PREFIX=f"dev{os.getpid()}")
        env.pop("SAILCAST_PORT", None)
        # its own process group, as a terminal gives it: Ctrl-C signals the whole group
        self.proc = subprocess.Popen(
            [*sailcast_command(), "dev", "--port", "0"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output())
            if m:
                return m
            assert self.proc.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in:\n{self.output()}")

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            self._out.close()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    d = Dev(tmp_path)
    yield d
    if d.proc.poll() is None:  # the test failed early: stop it, children included
        children = children_of(d.proc.pid)
        os.killpg(d.proc.pid, signal.SIGINT)
        try:
            d.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(d.proc.pid, signal.SIGKILL)
            d.proc.wait()
        for pid in still_running(children, timeout=2):  # their own sessions
            os.kill(pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


async def test_dev_serves_a_client_and_ctrl_c_stops_everything(dev: Dev) -> None:
    gateway_url = dev.wait_for(r"Gateway  (http://127\.0\.0\.1:\d+)/socket\.io/").group(1)
    nats_url = dev.wait_for(r"NATS     (nats://127\.0\.0\.1:\d+)").group(1)
    children = children_of(dev.proc.pid)
    assert len(children) == 3, dev.output()  # nats-server, gateway, demo worker

    client = socketio.AsyncClient(reconnection=False)
    got: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()
    client.on("hello", lambda *args: got.put_nowait(args))
    await client.connect(f"{gateway_url}?__sails_io_sdk_version=1.2.1", transports=["websocket"])
    try:
        # the demo worker answers a virtual request (publisher.router over NATS)
        jwr = await client.call("get", {"method": "get", "url": "/item", "headers": {}}, timeout=10)
        assert jwr["statusCode"] == 200, jwr
        assert isinstance(jwr["body"], list)
        # a worker of ours reaches the socket through the embedded NATS
        pub = SyncPublisher(nats_url, prefix=f"dev{os.getpid()}")
        try:
            pub.sockets.broadcast(client.get_sid(), "hello", {"from": "worker"})
        finally:
            pub.close()
        data, offset = await asyncio.wait_for(got.get(), 10)
        assert data == {"from": "worker"}
        # ... through the history stream: stored events carry their offset (CSR is on)
        assert parse_offset(offset) is not None, offset
        # ... through the history stream: `sailcast dev` keeps history for every room
        nc = await nats.connect(nats_url)
        try:
            own = Subjects(f"dev{os.getpid()}").history(str(client.get_sid()))
            info = await nc.jetstream().stream_info(
                stream_name(f"dev{os.getpid()}"), subjects_filter=own
            )
        finally:
            await nc.close()
        assert (info.config.metadata or {})[METADATA_KEY] == "*=100/2m"
        assert info.state.subjects == {own: 1}
    finally:
        await client.disconnect()

    started = time.monotonic()
    assert dev.ctrl_c() == 0, dev.output()
    assert time.monotonic() - started < STOP_TIMEOUT_S
    left = still_running(children, timeout=5)
    assert not left, f"left running: {left}\n{dev.output()}"
    assert "Traceback" not in dev.output()
