"""`sailcast dev`: everything on one laptop — an embedded nats-server, one gateway on
127.0.0.1:1337 and a demo worker — with instructions for connecting a client."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import orjson

from gateway import logs
from gateway.embedded_nats import EmbeddedNats

log = logging.getLogger("sailcast.dev")

HELP_TEXT = """
Sailcast dev stack is up.
  NATS     {nats}
  Gateway  http://{host}:{port}/socket.io/  (Socket.IO v4 clients; metrics http://{host}:{mport}/metrics)

Connect a client (python-socketio):
  python -c "import socketio; c=socketio.Client(); c.on('*', lambda e,d: print(e,d)); \\
c.connect('http://{host}:{port}'); print('my id', c.sid); c.wait()"

The demo worker blasts a 'tick' event every 2 seconds. Publish from your own worker:
  from publisher import SyncPublisher
  pub = SyncPublisher("{nats}")
  pub.sockets.broadcast("<socket id>", "chat", {{"text": "hi"}})
Ctrl-C stops everything.
"""


def main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="sailcast dev", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("SAILCAST_PORT", "1337")))
    p.add_argument(
        "--nats-port",
        type=int,
        default=int(os.environ.get("SAILCAST_DEV_NATS_PORT", "0")),
        help="port of the embedded nats-server (0 = a free one)",
    )
    p.add_argument("--metrics-port", type=int, default=9464)
    p.add_argument("--no-demo", action="store_true", help="do not start the demo worker")
    args = p.parse_args(list(argv))
    logs.configure("INFO", "text")

    nats = EmbeddedNats(args.nats_port).start()
    env = dict(os.environ, SAILCAST_NATS_URL=nats.url)
    gw = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--metrics-port",
            str(args.metrics_port),
        ],
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        assert gw.stdout is not None
        line = gw.stdout.readline()
        if not line:
            raise SystemExit("the gateway did not start (see its log above)")
        ready = orjson.loads(line)
        print(
            HELP_TEXT.format(
                nats=nats.url, host=args.host, port=ready["port"], mport=ready["metrics_port"]
            ),
            flush=True,
        )
        if args.no_demo:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        else:
            asyncio.run(demo_worker(nats.url))
    except KeyboardInterrupt:
        pass
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(timeout=10)
        except subprocess.TimeoutExpired:
            gw.kill()
        nats.close()


async def demo_worker(nats_url: str) -> None:
    """Blast a tick every two seconds so a connected client sees traffic at once."""
    from publisher import Publisher

    async with await Publisher.connect(nats_url) as pub:
        n = 0
        while True:
            n += 1
            await pub.sockets.blast("tick", {"n": n, "at": time.time()})
            await asyncio.sleep(2)
