"""`pub.model("user")`: the async facade that runs what the planner plans.

Every verb is generated from its planner method (or blueprint action) by `runs`, so
the facade repeats no signature: `Model.publish_create` takes exactly the parameters
of `Planner.publish_create` and mypy checks them; only `run` (carrying steps out) is
written here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Concatenate, ParamSpec, Protocol

import publisher.blueprints as blueprints
from publisher.models.ids import IdOrRecord
from publisher.models.planner import Planner
from publisher.models.registry import ModelRegistry, default_registry
from publisher.models.steps import AddMembers, Emit, Join, Leave, Step, merge
from publisher.sockets import Sockets
from shared.errors import LimitExceeded, NoSuchSocket

log = logging.getLogger(__name__)

P = ParamSpec("P")


class HasSockets(Protocol):
    """What a model needs of its publisher (a `Publisher`): its `sockets` verbs."""

    @property
    def sockets(self) -> Sockets: ...


def runs(
    plan: Callable[Concatenate[Planner, P], list[Step]],
) -> Callable[Concatenate[Model, P], Coroutine[Any, Any, None]]:
    """A `Model` method that plans with `plan` (a `Planner` method or a blueprint action
    taking the planner first) and runs the steps; same parameters, same docstring."""

    async def method(self: Model, /, *args: P.args, **kwargs: P.kwargs) -> None:
        await self.run(plan(self.plan, *args, **kwargs))

    functools.update_wrapper(method, plan)
    return method


class ModelRooms:
    """The room names of one model, computed from its planner (no I/O): shared by
    `Model` and its blocking twin `publisher.sync.SyncModel`."""

    plan: Planner
    identity: str

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity}>"

    @property
    def class_room(self) -> str:
        """`sails_model_create_<identity>`: the room of the watchers."""
        return self.plan.class_room

    def get_room_name(self, id: IdOrRecord) -> str:
        """Sails v1 `Model.getRoomName(id)`: `sails_model_<identity>_<id>:<identity>`."""
        return self.plan.get_room_name(id)

    def room(self, id: IdOrRecord, context: str | None = None) -> str:
        """The room a verb uses (with `contexts=True`, the 0.12 room of `context`)."""
        return self.plan.room(id, context)

    def contexts(self) -> tuple[str, ...]:
        """Sails 0.12 `getAllContexts()`."""
        return self.plan.contexts()


class Model(ModelRooms):
    """`pub.model("user")`. Every coroutine method returns once its broadcasts are
    published and its membership changes are in effect on every gateway; from a
    `SyncPublisher` (`sync_pub.model("user")`, a `SyncModel`) each one is a blocking call."""

    def __init__(
        self, pub: HasSockets, identity: str, *, registry: ModelRegistry | None = None
    ) -> None:
        self._pub = pub
        self.plan = Planner(registry or default_registry, identity)
        self.identity = self.plan.identity

    async def run(self, steps: Iterable[Step], *, msg_id: str | None = None) -> None:
        """Carry out planned steps in order (see `Planner`, `publisher.blueprints`).

        A join refused by a gateway's room limit does not stop the sequence (the other
        sockets still get their messages): the first such refusal is raised at the end.
        `msg_id`: an idempotency key for the broadcasts to history rooms, so running the
        same steps again (a retry) stores them once; the n-th broadcast of several gets
        `<msg_id>#<n>` (see `Sockets.broadcast`)."""
        sockets = self._pub.sockets
        refused: LimitExceeded | None = None
        planned = merge(steps)
        emits = sum(isinstance(step, Emit) for step in planned)
        n = 0
        for step in planned:
            try:
                if isinstance(step, Emit):
                    key = msg_id if msg_id is None or emits == 1 else f"{msg_id}#{n}"
                    n += 1
                    await sockets.broadcast(
                        list(step.rooms), step.event, step.payload, omit=list(step.omit), msg_id=key
                    )
                elif isinstance(step, Join | Leave):
                    verb = sockets.join if isinstance(step, Join) else sockets.leave
                    try:
                        await verb(step.socket_id, list(step.rooms))
                    except NoSuchSocket:
                        if not step.if_connected:
                            raise
                        log.debug("requester %s has gone; not (un)subscribed", step.socket_id)
                elif isinstance(step, AddMembers):
                    await sockets.add_room_members_to_rooms(step.source, list(step.rooms))
                else:
                    await sockets.remove_room_members_from_rooms(step.source, list(step.rooms))
            except LimitExceeded as exc:
                refused = refused or exc
        if refused is not None:
            raise refused

    # -- v1 public surface -------------------------------------------------------------------
    subscribe = runs(Planner.subscribe)
    unsubscribe = runs(Planner.unsubscribe)
    publish = runs(Planner.publish)
    watch = runs(Planner.watch)
    unwatch = runs(Planner.unwatch)
    introduce = runs(Planner.introduce)
    retire = runs(Planner.retire)

    # -- the verbs (Sails' _publishX / 0.12 publishX) -----------------------------------------
    publish_create = runs(Planner.publish_create)
    publish_update = runs(Planner.publish_update)
    publish_destroy = runs(Planner.publish_destroy)
    publish_add = runs(Planner.publish_add)
    publish_remove = runs(Planner.publish_remove)
    message = runs(Planner.message)

    # -- blueprint parity: one call per blueprint action (publisher.blueprints) ---------------
    after_find = runs(blueprints.after_find)
    after_find_one = runs(blueprints.after_find_one)
    after_populate = after_find_one
    after_create = runs(blueprints.after_create)
    after_update = runs(blueprints.after_update)
    after_destroy = runs(blueprints.after_destroy)
    after_add = runs(blueprints.after_add)
    after_remove = runs(blueprints.after_remove)
    after_replace = runs(blueprints.after_replace)

    # -- Sails 0.12 introspection, on top of `sockets.members` (docs/sails-compat.md) ---------
    async def subscribers(self, id: IdOrRecord, context: str | None = None) -> list[str]:
        """Sails 0.12 `Model.subscribers(record)`: the ids of the sockets subscribed to
        the record (its room, or with `contexts=True` the room of `context`),
        cluster-wide."""
        return await self._pub.sockets.subscribers(self.room(id, context))

    async def watchers(self) -> list[str]:
        """Sails 0.12 `Model.watchers()`: the sockets in the class room (told of
        creations), cluster-wide."""
        return await self._pub.sockets.subscribers(self.class_room)
