"""A worker process for test_request_storm.py.

    python -m tests.integration.storm_worker <nats url> <prefix> <name>

Answers `GET /work/:n` after a few milliseconds with `{n, worker}`. Prints `ready`
once it is in the queue group; on SIGTERM it leaves the group, finishes what it
holds, and prints `{"handled": [<n>...]}` (every request it answered) before exiting.
"""

from __future__ import annotations

import asyncio
import random
import sys

import orjson

from publisher import Publisher
from publisher.router import Request, Router


async def main(url: str, prefix: str, name: str) -> None:
    answered: list[str] = []
    router = Router()

    @router.get("/work/:n")
    async def work(req: Request) -> dict[str, str]:
        await asyncio.sleep(random.uniform(0.001, 0.01))
        answered.append(req.params["n"])
        return {"n": req.params["n"], "worker": name}

    async with await Publisher.connect(url, prefix=prefix, name=f"storm-{name}") as pub:
        await router.serve(pub, started=lambda: print("ready", flush=True), handle_signals=True)
    print(orjson.dumps({"handled": answered}).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
