"""`sailcast worker` as a real process for the integration tests: started, awaited until
it says `ready`, stopped with SIGTERM, and its exit status checked."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SAILCAST = str(Path(sys.executable).parent / "sailcast")  # the installed entry point
READY_S = 20.0


@asynccontextmanager
async def sailcast_worker(
    *args: str, nats_url: str, prefix: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`sailcast worker <args>` in the repository root; exits 0 on SIGTERM or fails."""
    env = {**os.environ, "SAILCAST_NATS_URL": nats_url, "SAILCAST_PREFIX": prefix}
    proc = await asyncio.create_subprocess_exec(
        SAILCAST, "worker", *args, cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while "ready" not in lines:
            line = await asyncio.wait_for(proc.stderr.readline(), READY_S)
            assert line, f"the worker exited: {lines}"
            lines.append(line.decode().strip())
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), READY_S) == 0
