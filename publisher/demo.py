"""The live demo's worker: a shared list that every open browser edits live.

    python -m publisher.demo --nats-url nats://127.0.0.1:4222 [--prefix sailcast]

(`sailcast dev` / `make run` start it next to a gateway serving the page at
http://127.0.0.1:1337/.) It is a small Sails app in Python: blueprint-style routes for
the model `item` answer the browsers' virtual requests (publisher.router), and the
resourceful pub/sub calls a Sails blueprint makes (`pub.model("item").after_*`) tell
the other browsers — `created` to everyone watching the list, `updated` and
`destroyed` to everyone subscribed to the item, never to the browser that asked, which
applies its own change from the answer, as Sails clients do.

    GET    /item            the list; subscribes to every item and watches the list
    POST   /item {text}     create (`created` to the watchers)
    PATCH  /item/:id {text?, done?}   update (`updated` to the item's subscribers)
    DELETE /item/:id        destroy (`destroyed`)

The hooks show up too: every socket that loaded the list counts as a viewer, and
`after_disconnect` takes it off and tells the others (event `viewers`).

The items live in this process's memory, so run one demo worker per prefix; a real
application keeps its state in a database and runs as many workers as it likes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

from publisher.client import Publisher
from publisher.router import Disconnected, HttpError, Request, Response, Router
from shared.config import NATS_OPTIONS, NatsSettings, Option, add_options, resolve

log = logging.getLogger("sailcast.demo")

MODEL: Final = "item"
MAX_TEXT_CHARS: Final = 200
MAX_ITEMS: Final = 500
VIEWERS_EVENT: Final = "viewers"

OPTIONS: Final[tuple[Option, ...]] = (
    *NATS_OPTIONS,
    Option("prefix", str, "sailcast", "NATS subject prefix of the gateways"),
    Option("log_level", str, "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
)


class SharedList:
    """The demo application: its state and its routes."""

    def __init__(self) -> None:
        self.items: dict[int, dict[str, Any]] = {}
        self.next_id = 1
        self.viewers: set[str] = set()
        self.router = Router()
        r = self.router
        r.get("/item")(self.find)
        r.get("/item/:id")(self.find_one)
        r.post("/item")(self.create)
        r.patch("/item/:id")(self.update)
        r.delete("/item/:id")(self.destroy)
        r.after_disconnect(self.gone)

    # -- routes --------------------------------------------------------------------------
    async def find(self, req: Request) -> list[dict[str, Any]]:
        records = [self.items[k] for k in sorted(self.items)]
        # Subscribed and watching before the answer leaves: nothing published after it
        # can be missed.
        await req.pub.model(MODEL).after_find(records, requester=req.socket_id)
        if req.socket_id not in self.viewers:
            self.viewers.add(req.socket_id)
            await self._tell_viewers(req.pub)
        return records

    async def find_one(self, req: Request) -> dict[str, Any]:
        record = self._get(req)
        await req.pub.model(MODEL).after_find_one(record, requester=req.socket_id)
        return record

    async def create(self, req: Request) -> dict[str, Any]:
        if len(self.items) >= MAX_ITEMS:
            raise HttpError(400, {"error": f"the list is full ({MAX_ITEMS} items)"})
        now, key = _now_ms(), self.next_id
        record = {
            "text": _text(req.param("text")),
            "done": False,
            "createdAt": now,
            "updatedAt": now,
            "id": key,
        }
        self.next_id += 1
        self.items[key] = record
        await req.pub.model(MODEL).after_create(record, requester=req.socket_id)
        return record

    async def update(self, req: Request, res: Response) -> Response:
        previous = self._get(req)
        values: dict[str, Any] = {}
        if req.param("text") is not None:
            values["text"] = _text(req.param("text"))
        if req.param("done") is not None:
            done = req.param("done")
            if not isinstance(done, bool):
                raise HttpError(400, {"error": "done must be true or false"})
            values["done"] = done
        if not values:
            raise HttpError(400, {"error": "nothing to update: send text and/or done"})
        record = {**previous, **values, "updatedAt": _now_ms()}
        self.items[record["id"]] = record
        # What Sails broadcasts as `data`: the values set, plus id and updatedAt.
        data = {**values, "id": record["id"], "updatedAt": record["updatedAt"]}
        await req.pub.model(MODEL).after_update(
            record["id"], data, previous=previous, requester=req.socket_id
        )
        return res.ok(record)

    async def destroy(self, req: Request) -> dict[str, Any]:
        previous = self._get(req)
        del self.items[previous["id"]]
        await req.pub.model(MODEL).after_destroy(previous, requester=req.socket_id)
        return previous

    # -- hooks -----------------------------------------------------------------------------
    async def gone(self, event: Disconnected) -> None:
        if event.socket_id in self.viewers:
            self.viewers.discard(event.socket_id)
            await self._tell_viewers(event.pub)

    async def _tell_viewers(self, pub: Publisher) -> None:
        room = pub.model(MODEL).class_room  # everyone watching the list
        await pub.sockets.broadcast(room, VIEWERS_EVENT, {"viewers": len(self.viewers)})

    def _get(self, req: Request) -> dict[str, Any]:
        try:
            return self.items[int(req.params["id"])]
        except (KeyError, ValueError):
            raise HttpError(404) from None


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HttpError(400, {"error": "text must be a non-empty string"})
    if len(value) > MAX_TEXT_CHARS:
        raise HttpError(400, {"error": f"text is limited to {MAX_TEXT_CHARS} characters"})
    return value.strip()


def _now_ms() -> int:
    return int(time.time() * 1000)


async def run(nats: NatsSettings, prefix: str) -> None:
    app = SharedList()
    async with await Publisher.connect(
        nats_settings=nats, prefix=prefix, name="sailcast-demo-worker"
    ) as pub:

        def started() -> None:
            log.info("demo worker answering /item on %s (prefix %s)", nats.describe(), prefix)
            # one line on stdout once the routes are subscribed (`sailcast dev` waits for it)
            print('{"event":"ready","worker":"demo"}', flush=True)

        await app.router.serve(pub, started=started, handle_signals=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m publisher.demo", description=__doc__)
    add_options(parser, OPTIONS)
    values = resolve(OPTIONS, parser.parse_args(argv))
    logging.basicConfig(
        level=values["log_level"], format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(NatsSettings.from_values(values), values["prefix"]))


if __name__ == "__main__":
    main()
