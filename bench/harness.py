"""What every ``python -m bench.<name>`` run shares: where it writes, the machine it
records, and stopping every process it started on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import orjson

from bench.rpc import REPO_ROOT

RESULTS_DIR: Final = REPO_ROOT / "bench" / "results"


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


async def until_interrupted(work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
    """Run ``work``; Ctrl-C or SIGTERM cancels it, so its ``finally`` blocks stop every
    process it started. Returns whether it was interrupted."""
    task = asyncio.ensure_future(work())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        progress("interrupted: every process was stopped")
        return True
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return False


def write_record(out_dir: Path, name: str, record: dict[str, Any]) -> Path:
    """``<out_dir>/<name>-<timestamp>.json``; prints where it went."""
    path = out_dir / f"{name}-{record['timestamp']}.json"
    path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    elapsed = f" ({record['elapsed_s']:.0f} s)" if "elapsed_s" in record else ""
    print(f"\nJSON: {shown}{elapsed}")
    return path
