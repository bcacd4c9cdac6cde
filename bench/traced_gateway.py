"""The gateway with tracemalloc on, dumping a snapshot on each SIGUSR1 (for profile_s3).

Run as ``BENCH_TRACEMALLOC_OUT=/tmp/x python -m bench.traced_gateway <gateway flags>``:
imports the gateway (``gateway.app`` pulls in aiohttp, python-socketio, nats-py),
starts tracemalloc with ``BENCH_TRACEMALLOC_FRAMES`` frames (default 25), then runs
``gateway.cli.main`` unchanged (same loop choice, same code paths). Tracing starts
after the imports because ``-X tracemalloc=25`` from the first import makes start-up
take ~30 s; the profile compares snapshots taken later, so nothing it needs is lost
(``-X tracemalloc=N`` still works: then tracing is already on). Each SIGUSR1 runs a
full garbage collection and writes ``<BENCH_TRACEMALLOC_OUT>.<n>.snap`` (n = 0, 1,
...; written under another name and renamed, so a reader never sees half a file).

The signal is taken by a thread of its own with ``sigwait`` (SIGUSR1 is blocked in
every other thread), so a snapshot does not depend on the event loop waking up and
the gateway's own signal handling is untouched.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import tracemalloc

OUT_ENV: str = "BENCH_TRACEMALLOC_OUT"
FRAMES_ENV: str = "BENCH_TRACEMALLOC_FRAMES"
DEFAULT_FRAMES: int = 25


def _dump_on_signal(out: str) -> None:
    n = 0
    while True:
        signal.sigwait({signal.SIGUSR1})
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, __file__),
            ]
        )
        final = f"{out}.{n}.snap"
        snapshot.dump(final + ".part")
        os.replace(final + ".part", final)
        n += 1


def main() -> None:
    out = os.environ.get(OUT_ENV)
    if not out:
        raise SystemExit(f"{OUT_ENV} must name the snapshot path prefix")
    import gateway.app  # noqa: F401  (the heavy imports, before tracing)
    from gateway.cli import main as gateway_main

    if not tracemalloc.is_tracing():
        tracemalloc.start(int(os.environ.get(FRAMES_ENV, DEFAULT_FRAMES)))
    # Blocked before any other thread exists, so every thread inherits the mask and
    # only the sigwait thread ever receives SIGUSR1.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    threading.Thread(target=_dump_on_signal, args=(out,), name="snapshots", daemon=True).start()
    gateway_main(["gateway", *sys.argv[1:]])


if __name__ == "__main__":
    main()
