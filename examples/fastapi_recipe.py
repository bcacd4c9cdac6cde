"""FastAPI recipe: a lifespan-managed `Publisher`, routes that answer HTTP and
sails.io.js alike (`sailcast worker --asgi examples.fastapi_recipe:app`).

The lifespan connects once per process and closes (flushing what is queued) on
shutdown; routes find it in `request.state.pub`. A sails.io.js request carries the
socket id in `x-sailcast-socket-id`, so a route can join the requester to a room."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from publisher import Publisher
from shared.config import NatsSettings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    pub = await Publisher.connect(
        nats_settings=NatsSettings.from_env(),
        prefix=os.environ.get("SAILCAST_PREFIX", "sailcast"),
    )
    async with pub:  # closes and flushes on shutdown
        yield {"pub": pub}


app = FastAPI(lifespan=lifespan)


class Message(BaseModel):
    text: str


def socket_of(request: Request) -> str:
    socket_id = request.headers.get("x-sailcast-socket-id")
    if socket_id is None:
        raise HTTPException(400, "only a socket can join a room")
    return socket_id


@app.post("/rooms/{room}/join")
async def join(room: str, request: Request) -> dict[str, str]:
    """io.socket.post('/rooms/lobby/join'): in effect when the answer arrives."""
    pub: Publisher = request.state.pub
    await pub.sockets.join(socket_of(request), room)
    return {"joined": room}


@app.post("/rooms/{room}/messages", status_code=201)
async def post_message(room: str, message: Message, request: Request) -> dict[str, Any]:
    """From HTTP or a socket; a socket sender does not get its own message back."""
    pub: Publisher = request.state.pub
    sender = request.headers.get("x-sailcast-socket-id")
    await pub.sockets.broadcast(room, "chat", {"room": room, "text": message.text}, omit=sender)
    return {"room": room, "text": message.text}


@app.get("/rooms/{room}")
async def room_info(room: str) -> dict[str, str]:
    return {"room": room}
