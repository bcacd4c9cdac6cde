"""`sailcast worker`: a worker process answering sails.io.js virtual requests, with an
existing ASGI application (`--asgi myapp.main:app`, publisher.asgi) or a
`publisher.router.Router` (`--router myapp.routes:router`).

    SAILCAST_NATS_URL=nats://nats:4222 sailcast worker --asgi myapp.main:app

NATS comes from the `SAILCAST_NATS_*` variables the gateway uses (`--nats-url`
overrides the servers), the subject prefix from `--prefix` / `SAILCAST_PREFIX`. The
current directory is importable, as with uvicorn. It prints `ready` on stderr once in
the workers' queue group; SIGTERM or SIGINT leaves the group, finishes the requests it
holds (and runs the ASGI app's lifespan shutdown), then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from publisher.asgi import DEFAULT_EVENTS_PATH, AsgiBridge
from publisher.client import Publisher
from publisher.router.dispatch import DEFAULT_MAX_CONCURRENCY, Router
from shared.config import NatsSettings, parse_servers
from shared.errors import ConfigError, UsageError


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sailcast worker", description="answer virtual requests from sails.io.js"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--asgi", metavar="MODULE:APP", help="an ASGI application")
    what.add_argument("--router", metavar="MODULE:ROUTER", help="a publisher.router.Router")
    parser.add_argument("--nats-url", default="", help="NATS servers (else SAILCAST_NATS_URL)")
    parser.add_argument(
        "--prefix", default=os.environ.get("SAILCAST_PREFIX", "sailcast"), help="subject prefix"
    )
    parser.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="NAME",
        help="with --asgi: a client event the app answers as a POST to --events-path "
        "(repeatable; '*' for all)",
    )
    parser.add_argument("--events-path", default=DEFAULT_EVENTS_PATH)
    parser.add_argument("--max-concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY)
    parser.add_argument("--no-lifespan", action="store_true", help="do not run the app's lifespan")
    return parser.parse_args(list(argv))


def load(spec: str) -> Any:
    """`package.module:attribute` (dots allowed in the attribute) to the object."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected package.module:name, got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


async def run(args: argparse.Namespace) -> None:
    nats = NatsSettings.from_env()
    if args.nats_url:
        nats = dataclasses.replace(nats, servers=parse_servers(args.nats_url))
    target = load(args.asgi or args.router)
    server: AsgiBridge | Router
    if args.asgi:
        server = AsgiBridge(
            target,
            max_concurrency=args.max_concurrency,
            lifespan=not args.no_lifespan,
            events=tuple(args.event),
            events_path=args.events_path,
        )
    elif isinstance(target, Router):
        server = target
    else:
        raise UsageError(f"{args.router} is not a publisher.router.Router")
    async with await Publisher.connect(prefix=args.prefix, nats_settings=nats) as pub:
        await server.serve(
            pub, started=lambda: print("ready", file=sys.stderr, flush=True), handle_signals=True
        )


def main(argv: Sequence[str]) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.path.insert(0, os.getcwd())
    try:
        asyncio.run(run(args))
    except (ConfigError, UsageError) as exc:
        sys.stderr.write(f"sailcast worker: {exc}\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
