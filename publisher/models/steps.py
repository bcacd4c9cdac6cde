"""The step algebra: what a model verb does, as data (broadcast, join, leave, add or
remove a room's members), and `merge`, which folds neighbouring membership steps."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Emit:
    """`sails.sockets.broadcast(rooms, event, payload, omit)`: once per socket."""

    rooms: tuple[str, ...]
    event: str
    payload: Any
    omit: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Join:
    socket_id: str
    rooms: tuple[str, ...]
    if_connected: bool = False
    """True for a blueprint's requester: a socket that has gone is skipped, not an error."""


@dataclass(frozen=True, slots=True)
class Leave:
    socket_id: str
    rooms: tuple[str, ...]
    if_connected: bool = False


@dataclass(frozen=True, slots=True)
class AddMembers:
    """`addRoomMembersToRooms(source, rooms)`, cluster-wide."""

    source: str
    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemoveMembers:
    source: str
    rooms: tuple[str, ...]


Step = Emit | Join | Leave | AddMembers | RemoveMembers


def merge(steps: Iterable[Step]) -> list[Step]:
    """Fold neighbouring membership steps of one socket / source room into one request.
    Broadcasts are never reordered or merged."""
    out: list[Step] = []
    for step in steps:
        last = out[-1] if out else None
        if isinstance(step, Join | Leave) and type(last) is type(step):
            assert isinstance(last, Join | Leave)
            if (last.socket_id, last.if_connected) == (step.socket_id, step.if_connected):
                rooms = tuple(dict.fromkeys(last.rooms + step.rooms))
                out[-1] = type(step)(step.socket_id, rooms, step.if_connected)
                continue
        if isinstance(step, AddMembers | RemoveMembers) and type(last) is type(step):
            assert isinstance(last, AddMembers | RemoveMembers)
            if last.source == step.source:
                out[-1] = type(step)(step.source, tuple(dict.fromkeys(last.rooms + step.rooms)))
                continue
        out.append(step)
    return out
