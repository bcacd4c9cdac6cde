"""JSON-lines RPC between the harness and its worker processes.

Load generators and the publisher are separate OS processes (so their CPU is not
mixed with the harness's and they use the cores the OS gives them); one request at a
time over stdin/stdout is all the control they need. Every reply carries the worker's
own CPU time so the harness can report it without another round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

Handler = Callable[..., Awaitable[dict[str, Any]]]

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
STDOUT_LIMIT_BYTES: int = 64 * 1024 * 1024


class WorkerError(RuntimeError):
    """A worker process replied with an error or died."""


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Callable[[], Coroutine[Any, Any, None]], *, use_uvloop: bool = True) -> None:
    """Run ``main()`` on uvloop when it is installed and wanted, else on asyncio.

    The harness's own processes use uvloop when they can: a cheaper load generator
    measures more of the server and less of itself.
    """
    if use_uvloop and uvloop_available():
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


async def serve(handlers: Mapping[str, Handler]) -> None:
    """Worker side: answer requests from stdin until ``exit`` or end of input."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STDOUT_LIMIT_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out: TextIO = sys.stdout
    while True:
        line = await reader.readline()
        if not line:
            return
        request = orjson.loads(line)
        op = request.pop("op")
        if op == "exit":
            return
        try:
            reply = await handlers[op](**request)
            reply["ok"] = True
        except Exception as exc:  # reported to the harness, which fails the scenario
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply["cpu_s"] = time.process_time()
        out.write(orjson.dumps(reply, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
        out.flush()


class Worker:
    """Harness side of one worker process (``python -m <module>``)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self._proc = proc
        self.name = name
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    async def spawn(
        cls, module: str, *, name: str, log: TextIO, env: Mapping[str, str] | None = None
    ) -> Worker:
        """Start ``python -m module`` with the repository importable."""
        return await cls.spawn_argv([sys.executable, "-m", module], name=name, log=log, env=env)

    @classmethod
    async def spawn_argv(
        cls,
        argv: Sequence[str],
        *,
        name: str,
        log: TextIO,
        env: Mapping[str, str] | None = None,
    ) -> Worker:
        """Start any program that speaks this protocol (e.g. a Node publisher)."""
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH", "")) if p
        )
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=REPO_ROOT,
            env=full_env,
            limit=STDOUT_LIMIT_BYTES,
        )
        return cls(proc, name)

    async def call(self, op: str, timeout_s: float = 120.0, **args: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        async with self._lock:
            self._proc.stdin.write(orjson.dumps({"op": op, **args}) + b"\n")
            await self._proc.stdin.drain()
            try:
                line = await asyncio.wait_for(self._proc.stdout.readline(), timeout_s)
            except TimeoutError as exc:
                raise WorkerError(f"{self.name}: {op} timed out after {timeout_s} s") from exc
        if not line:
            raise WorkerError(f"{self.name} exited (code {self._proc.returncode}) during {op}")
        reply: dict[str, Any] = orjson.loads(line)
        if not reply.pop("ok"):
            raise WorkerError(f"{self.name}: {op}: {reply['error']}")
        return reply

    async def close(self) -> None:
        if self._proc.returncode is None:
            with contextlib.suppress(Exception):
                assert self._proc.stdin is not None
                self._proc.stdin.write(b'{"op":"exit"}\n')
                await self._proc.stdin.drain()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
