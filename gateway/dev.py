"""`sailcast dev`: everything on one laptop — an embedded nats-server (with JetStream),
one gateway on 127.0.0.1:1337 serving the live demo page, with history on for every room
(`--history '*=100/2m'`, so a reconnecting client recovers what it missed), and the demo
worker (publisher.demo) — with instructions for connecting a client."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import orjson

from gateway import logs
from gateway.children import spawn, stop
from gateway.embedded_nats import EmbeddedNats
from gateway.settings import LogSettings, option

log = logging.getLogger("sailcast.dev")

DEV_HISTORY: Final = "*=100/2m"
"""Every room keeps its last 100 messages for 2 minutes: recovery works out of the box."""

HELP_TEXT = """
Sailcast dev stack is up.
  Demo     http://{host}:{port}/  (open it in two windows: a shared list, edited live)
  NATS     {nats}  (JetStream)
  History  {history}  (rooms=messages/age kept for recovery: docs/recovery.md)
  Gateway  http://{host}:{port}/socket.io/  (sails.io.js, Socket.IO v2 and v4 clients;
           metrics http://{host}:{mport}/metrics)
{client_note}
Connect a client (python-socketio) and ask the demo worker for the list:
  python -c "import socketio; c=socketio.Client(); c.on('*', lambda e,d: print(e,d)); \\
c.connect('http://{host}:{port}?__sails_io_sdk_version=1.2.1'); \\
print(c.call('get', {{'url': '/item'}})); c.wait()"

The demo worker (python -m publisher.demo) answers /item with publisher.router.
Publish from your own worker:
  from publisher import SyncPublisher
  pub = SyncPublisher("{nats}")
  pub.sockets.broadcast("<socket id>", "chat", {{"text": "hi"}})
Ctrl-C stops everything.
"""

NO_CLIENT_NOTE = """
  (The demo page needs the sails.io.js browser bundle: `make run` fetches it with npm
   into .tools/sails.io.js, or point SAILCAST_SAILS_IO_JS at a copy.)
"""

SAILS_IO_JS_CANDIDATES = (
    ".tools/sails.io.js/dist/sails.io.js",  # make run (npm pack sails.io.js@1.2.1)
    "tests/e2e/js/node_modules/sails.io.js/dist/sails.io.js",  # the e2e set-up
)


def find_sails_io_js() -> str:
    """The stock sails.io.js browser bundle, from npm; never shipped in this repo."""
    configured = os.environ.get(option("sails_io_js").env)
    if configured:
        return configured
    roots = (Path.cwd(), Path(__file__).resolve().parent.parent)
    for root in roots:
        for candidate in SAILS_IO_JS_CANDIDATES:
            if (root / candidate).is_file():
                return str(root / candidate)
    return ""


def main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="sailcast dev", description=__doc__)
    host, port = option("host"), option("port")
    p.add_argument("--host", default=host.default, help=f"listen address ({host.help})")
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(port.env, port.default)),
        help=f"Socket.IO port [env {port.env}]",
    )
    p.add_argument(
        "--nats-port",
        type=int,
        default=int(os.environ.get("SAILCAST_DEV_NATS_PORT", "0")),
        help="port of the embedded nats-server (0 = a free one)",
    )
    p.add_argument("--metrics-port", type=int, default=0, help="ops port (0 = a free one; printed)")
    history = option("history")
    p.add_argument(
        "--history",
        default=os.environ.get(history.env, DEV_HISTORY),
        help=f"history rules of the gateway [env {history.env}; default {DEV_HISTORY!r} "
        "here, '' = no history]",
    )
    p.add_argument("--no-demo", action="store_true", help="do not start the demo worker")
    args = p.parse_args(list(argv))
    logs.configure(LogSettings())

    nats = EmbeddedNats(args.nats_port).start()
    bundle = find_sails_io_js()
    env = dict(os.environ)
    env[option("nats_url").env] = nats.url
    env[option("static_dir").env] = str(Path(__file__).resolve().parent / "static")
    env[option("sails_io_js").env] = bundle
    env[history.env] = args.history
    # no load balancer to tell on a laptop: stop at once (a user's setting still wins)
    env.setdefault(option("drain_delay_s").env, "0")
    worker: subprocess.Popen[bytes] | None = None
    # Children get their own session (gateway/children.py): Ctrl-C reaches only this
    # process, which then stops them in order (worker, gateway, NATS).
    gw = spawn(
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
        if not args.no_demo:
            worker = spawn(
                [sys.executable, "-m", "publisher.demo"], env=env, stdout=subprocess.PIPE
            )
            assert worker.stdout is not None
            if not worker.stdout.readline():  # its ready line: the routes are answered
                raise SystemExit("the demo worker did not start (see its log above)")
        print(
            HELP_TEXT.format(
                nats=nats.url,
                history=args.history or "off",
                host=args.host,
                port=ready["port"],
                mport=ready["metrics_port"],
                client_note="" if bundle else NO_CLIENT_NOTE,
            ),
            flush=True,
        )
        stop_signals = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # HUP: terminal closed
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # children are started
        signal.sigwait(stop_signals)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (worker, gw):
            if proc is not None:
                stop(proc, timeout_s=10)
        nats.close()
