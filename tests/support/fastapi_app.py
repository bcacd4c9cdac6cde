"""A FastAPI application the ASGI bridge is tested with (tests/integration/
test_asgi_bridge.py): its own routes, cookies, lifespan state and validation, unaware
of Sailcast but for the socket id it finds in the request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel

from publisher.asgi import SocketContext


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "hello from the lifespan"}


app = FastAPI(lifespan=lifespan)


class Login(BaseModel):
    name: str


@app.get("/users/{user_id}")
async def find_user(user_id: int, request: Request, q: str = "") -> dict[str, Any]:
    ctx: SocketContext = request.state.sailcast
    return {
        "id": user_id,
        "q": q,
        "socket": request.headers["x-sailcast-socket-id"],
        "stateSocket": ctx.socket_id,
        "greeting": request.state.greeting,
    }


@app.post("/users/{user_id}/subscribe", status_code=201)
async def subscribe(user_id: int, request: Request) -> dict[str, int]:
    ctx: SocketContext = request.state.sailcast
    await ctx.pub.model("user").subscribe(ctx.socket_id, [user_id])
    return {"subscribed": user_id}


@app.post("/login")
async def login(body: Login, response: Response) -> dict[str, bool]:
    response.set_cookie("sid", body.name, httponly=True)
    return {"ok": True}


@app.get("/whoami")
async def whoami(request: Request) -> dict[str, Any]:
    return {"name": request.cookies.get("sid")}


@app.get("/text")
async def text() -> Response:
    return Response("plain words", media_type="text/plain", headers={"x-thing": "1"})


@app.post("/sailcast/events")
async def client_event(request: Request) -> dict[str, Any]:
    """Client events the bridge is told to answer arrive here (AsgiBridge events=)."""
    body = await request.json()
    return {"heard": request.headers["x-sailcast-event"], "args": body["args"]}
