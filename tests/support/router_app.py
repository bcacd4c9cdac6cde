"""A `publisher.router.Router` served by `sailcast worker --router` in
tests/integration/test_client_events.py: one route and one client event."""

from __future__ import annotations

from typing import Any

from publisher.router import Event, Request, Router

router = Router()


@router.get("/ping")
async def ping(req: Request) -> dict[str, str]:
    return {"pong": req.socket_id}


@router.event("ping")
def ping_event(ev: Event) -> tuple[Any, ...]:
    return "pong", ev.data
