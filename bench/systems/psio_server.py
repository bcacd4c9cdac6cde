"""Reference (b): python-socketio on aiohttp with ``AsyncRedisManager``.

What a Python user picks today for multi-process Socket.IO: every process subscribes
to one Redis channel and filters each message by room itself. Websocket transport
only, default ping settings. Run as
``python -m bench.systems.psio_server --redis-url URL --channel C [--loop asyncio]``
(default uvloop); the ready line names the loop it runs on.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import orjson
import socketio
from aiohttp import web

from bench.procstat import running_loop_name


async def serve(redis_url: str, channel: str, host: str, port: int) -> None:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        transports=["websocket"],
        logger=False,
        engineio_logger=False,
    )
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = {
        "event": "ready",
        "host": host,
        "port": runner.addresses[0][1],
        "loop": running_loop_name(),
    }
    sys.stdout.write(orjson.dumps(ready).decode() + "\n")
    sys.stdout.flush()
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    coro = serve(args.redis_url, args.channel, args.host, args.port)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
