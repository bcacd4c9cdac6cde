"""`sailcast` command line: `gateway` runs one gateway, `dev` runs a local stack."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence

import orjson

from gateway import logs
from gateway.settings import from_argv
from shared.errors import ConfigError, TransportError
from shared.version import __version__

USAGE = """usage: sailcast {gateway,worker,dev,version} [options]

  gateway   run a gateway (sailcast gateway --help)
  worker    answer virtual requests with an ASGI app or a Router (sailcast worker --help)
  dev       embedded nats-server + one gateway on 127.0.0.1:1337 + demo (sailcast dev --help)
  version   print the version
"""


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return
    cmd, rest = args[0], args[1:]
    if cmd == "version":
        print(__version__)
    elif cmd == "gateway":
        run_gateway(rest)
    elif cmd == "worker":
        from publisher.worker import main as worker_main

        worker_main(rest)
    elif cmd == "dev":
        from gateway.dev import main as dev_main

        dev_main(rest)
    else:
        sys.stderr.write(f"sailcast: unknown command {cmd!r}\n{USAGE}")
        raise SystemExit(2)


def run_gateway(argv: Sequence[str]) -> None:
    try:
        settings, args = from_argv(argv)
    except ConfigError as exc:
        sys.stderr.write(f"sailcast gateway: configuration error: {exc}\n")
        raise SystemExit(2) from None
    if args.print_config:
        print(orjson.dumps(settings.describe(), option=orjson.OPT_INDENT_2).decode())
        return
    logs.configure(settings.logs)
    from gateway.app import serve

    try:
        with contextlib.suppress(KeyboardInterrupt):
            _run(serve(settings))
    except TransportError as exc:  # at start only: the history stream (JetStream)
        sys.stderr.write(f"sailcast gateway: {exc}\n")
        raise SystemExit(1) from None


def _run(coro: object) -> None:
    try:
        import uvloop
    except ImportError:  # only the import: an ImportError from the gateway must surface
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]
