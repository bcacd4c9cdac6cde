"""Reference (a): the Python limit for a NATS-backed Socket.IO-compatible fan-out.

Plain aiohttp websockets, one NATS subscription per room with local members, and per
broker message one pre-encoded ``42[...]`` string written with ``send_str`` to each
member. It speaks just enough Engine.IO v4 / Socket.IO v5 for the load generator:
open packet, ``40`` connect reply, server pings. Joins arrive on ``<prefix>.ctl`` as a
JSON list of ``[sid, room]`` pairs; every server process applies the ones it owns.

Run as ``python -m bench.systems.plain_server --nats-url URL --prefix P [--loop asyncio]``
(default uvloop); the ready line names the loop it runs on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import sys

import nats
import orjson
from aiohttp import WSMsgType, web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bench.procstat import running_loop_name

PING_INTERVAL_S: float = 25.0
PING_TIMEOUT_S: float = 20.0
MAX_PAYLOAD_BYTES: int = 1_000_000


class Hub:
    """Local sockets, local room membership and the NATS subscriptions they need."""

    def __init__(self, nc: NATS, prefix: str) -> None:
        self.nc = nc
        self.prefix = prefix
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.rooms: dict[str, set[web.WebSocketResponse]] = {}
        self.memberships: dict[web.WebSocketResponse, set[str]] = {}
        self.subs: dict[str, Subscription] = {}

    async def on_control(self, msg: Msg) -> None:
        for sid, room in orjson.loads(msg.data):
            ws = self.sockets.get(sid)
            if ws is not None:
                await self.join(ws, room)

    async def join(self, ws: web.WebSocketResponse, room: str) -> None:
        members = self.rooms.get(room)
        if members is None:
            members = self.rooms[room] = set()
            self.subs[room] = await self.nc.subscribe(
                f"{self.prefix}.room.{room}", cb=self._deliverer(members)
            )
        members.add(ws)
        self.memberships.setdefault(ws, set()).add(room)

    async def forget(self, sid: str | None, ws: web.WebSocketResponse) -> None:
        if sid is not None:
            self.sockets.pop(sid, None)
        for room in self.memberships.pop(ws, ()):
            members = self.rooms[room]
            members.discard(ws)
            if not members:
                del self.rooms[room]
                await self.subs.pop(room).unsubscribe()

    @staticmethod
    def _deliverer(members: set[web.WebSocketResponse]):  # type: ignore[no-untyped-def]
        async def deliver(msg: Msg) -> None:
            frame = "42" + msg.data.decode()  # payload is already ["event", data]
            for ws in tuple(members):
                try:  # noqa: SIM105 (no context manager per delivery on the hot path)
                    await ws.send_str(frame)
                except ConnectionError:
                    pass  # its handler's finally block removes it

        return deliver

    async def ping_forever(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            for ws in tuple(self.sockets.values()):
                with contextlib.suppress(ConnectionError):
                    await ws.send_str("2")


async def socket_handler(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app["hub"]
    if request.query.get("EIO") != "4" or request.query.get("transport") != "websocket":
        raise web.HTTPBadRequest(text="only EIO=4 websocket transport")
    ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_PAYLOAD_BYTES)
    await ws.prepare(request)
    opening = {
        "sid": secrets.token_urlsafe(15),
        "upgrades": [],
        "pingInterval": int(PING_INTERVAL_S * 1000),
        "pingTimeout": int(PING_TIMEOUT_S * 1000),
        "maxPayload": MAX_PAYLOAD_BYTES,
    }
    await ws.send_str("0" + orjson.dumps(opening).decode())
    sid: str | None = None
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            data = msg.data
            if data.startswith("40") and sid is None:
                sid = secrets.token_urlsafe(15)
                hub.sockets[sid] = ws
                await ws.send_str('40{"sid":"' + sid + '"}')
            elif data.startswith("41"):
                break
            # "3" (pong) and client events need nothing here.
    finally:
        await hub.forget(sid, ws)
    return ws


async def serve(nats_url: str, prefix: str, host: str, port: int) -> None:
    nc = await nats.connect(nats_url, name="bench-plain", max_reconnect_attempts=-1)
    hub = Hub(nc, prefix)
    await nc.subscribe(f"{prefix}.ctl", cb=hub.on_control)
    app = web.Application()
    app["hub"] = hub
    app.router.add_get("/socket.io/", socket_handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    pinger = asyncio.create_task(hub.ping_forever())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = {"event": "ready", "host": host, "port": bound_port, "loop": running_loop_name()}
    sys.stdout.write(orjson.dumps(ready).decode() + "\n")
    sys.stdout.flush()
    await stop.wait()
    pinger.cancel()
    await runner.cleanup()
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    coro = serve(args.nats_url, args.prefix, args.host, args.port)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
