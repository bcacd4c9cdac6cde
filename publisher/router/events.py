"""What a client-event handler sees: `Event`, one `socket.emit("typing", data, ack)` of
a Socket.IO client, forwarded by its gateway to a worker that declared the event
(`@router.event("typing")`). The handler's return value is the client's ack."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.client_events import SocketEvent
from shared.vrequest import Handshake

if TYPE_CHECKING:
    from publisher.client import Publisher


class Event:
    """One client event: `name`, `data` (the first argument), `args` (all of them), the
    sender (`socket_id`, `handshake`, `claims`) and the worker's publisher `pub`."""

    def __init__(self, ev: SocketEvent, pub: Publisher) -> None:
        self.name = ev.event
        self.args = ev.args
        self.data: Any = ev.args[0] if ev.args else None
        self.socket_id = ev.socket_id
        self.gateway_id = ev.gateway_id
        self.handshake: Handshake = ev.handshake
        self.wants_ack = ev.ack
        """Whether the client passed an ack callback (the return value reaches it)."""
        self.pub = pub

    def __repr__(self) -> str:
        return f"<Event {self.name!r} from {self.socket_id}>"

    @property
    def claims(self) -> Any:
        """What the gateway's before-connect check granted the sender (None without)."""
        return self.handshake.claims

    async def join(self, rooms: str | list[str]) -> None:
        await self.pub.sockets.join(self.socket_id, rooms)

    async def leave(self, rooms: str | list[str]) -> None:
        await self.pub.sockets.leave(self.socket_id, rooms)
