"""`pub.model(identity)`: Sails' resourceful pub/sub on top of `pub.sockets`.

Declare the models a worker talks about once per process (Sails' `sails.models`):

    from publisher.models import define, to_many, to_one
    define("user", {"pets": to_many("pet", via="owner"), "tags": to_many("tag", via="users")})
    define("pet", {"owner": to_one("user")})
    define("tag", {"users": to_many("user", via="tags")})

then, from the async or the sync publisher:

    user = pub.model("user")
    await user.subscribe(socket_id, [3])                       # sails_model_user_3:user
    await user.publish_update(3, {"name": "caroline"}, previous=old, omit=socket_id)
    await user.after_update(3, values, previous=old, requester=socket_id)  # blueprint parity

A model nobody declared works too: it has no associations and a number primary key.

Every method first *plans* what Sails would do as a list of steps (pure, no I/O: see
`Planner` here and `publisher.blueprints`), then runs the steps in order: a broadcast
is published, a membership change is awaited until every gateway concerned applied
it. Message shapes and key order are those a Sails 1.5 app puts on the wire. Where we
differ from Sails, on purpose: docs/sails-compat.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

from publisher import blueprints
from publisher.sockets import OneOrMany, as_socket_ids
from shared.errors import LimitExceeded, NoSuchSocket, UsageError
from shared.subjects import check_socket_id

if TYPE_CHECKING:
    from publisher.client import Publisher

log = logging.getLogger(__name__)

Id = int | str
Record = Mapping[str, Any]
IdOrRecord = Id | Record
IdsLike = IdOrRecord | Iterable[IdOrRecord]
PkType = Literal["number", "string"]

V1_CONTEXTS: Final = ("update", "destroy", "message")
"""Sails 0.12 contexts every model has; each collection adds `add:<a>` and `remove:<a>`."""

_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
_IDENTITY: Final = re.compile(r"[A-Za-z0-9_-]+")


# -- ids ---------------------------------------------------------------------------------
def _scalar(value: object, what: str) -> Id:
    """A usable id as given: a non-empty string or an integer (integral floats too)."""
    if isinstance(value, bool) or value is None:
        raise UsageError(f"{what} must be a number or a string, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value:
        return value
    raise UsageError(f"{what} must be a number or a non-empty string, got {value!r}")


def coerce_id(value: object, pk_type: PkType, what: str = "id") -> Id:
    """Sails' parseId: a `number` primary key becomes an integer, a `string` one a string.
    Where Sails would produce NaN (`parseInt("abc")`), this raises UsageError."""
    scalar = _scalar(value, what)
    if pk_type == "string":
        return str(scalar)
    if isinstance(scalar, int):
        return scalar
    if _INTEGER.fullmatch(scalar.strip()):
        return int(scalar)
    raise UsageError(f"{what} {scalar!r} is not a number (the primary key type is 'number')")


# -- declarations ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Association:
    """One side of an association: `to_one("user")` (Sails `model: 'user'`) or
    `to_many("pet", via="owner")` (Sails `collection: 'pet', via: 'owner'`)."""

    model: str
    many: bool
    via: str | None = None


def to_one(model: str, *, via: str | None = None) -> Association:
    return Association(_identity(model), False, via)


def to_many(model: str, *, via: str | None = None) -> Association:
    return Association(_identity(model), True, via)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the publisher needs to know about a model. `contexts=True` switches to the
    Sails 0.12 rooms `sails_model_<identity>_<id>:<context>`; `autosubscribe` lists the
    contexts subscribe()/introduce() join by default (None: all of them)."""

    identity: str
    associations: Mapping[str, Association] = field(default_factory=dict)
    primary_key: str = "id"
    pk_type: PkType = "number"
    contexts: bool = False
    autosubscribe: tuple[str, ...] | None = None

    def all_contexts(self) -> tuple[str, ...]:
        extra = [
            f"{verb}:{alias}"
            for alias, assoc in self.associations.items()
            if assoc.many
            for verb in ("add", "remove")
        ]
        return (*V1_CONTEXTS, *extra)

    def default_contexts(self) -> tuple[str, ...]:
        return self.all_contexts() if self.autosubscribe is None else self.autosubscribe


def _identity(identity: object) -> str:
    if not isinstance(identity, str) or not _IDENTITY.fullmatch(identity):
        raise UsageError(f"model identity must be letters, digits, '_' or '-', got {identity!r}")
    return identity.lower()


class ModelRegistry:
    """The models of one application. Declare each once; a second, identical
    declaration is accepted (modules imported twice), a different one is an error."""

    def __init__(self) -> None:
        self._specs: dict[str, ModelSpec] = {}

    def define(
        self,
        identity: str,
        associations: Mapping[str, Association] | None = None,
        *,
        primary_key: str = "id",
        pk_type: PkType = "number",
        contexts: bool = False,
        autosubscribe: Iterable[str] | None = None,
    ) -> ModelSpec:
        ident = _identity(identity)
        assocs = dict(associations or {})
        for alias, assoc in assocs.items():
            if not isinstance(alias, str) or not alias or not isinstance(assoc, Association):
                raise UsageError(
                    f"{ident}: associations map attribute names to to_one()/to_many(), "
                    f"got {alias!r}: {assoc!r}"
                )
        if pk_type not in ("number", "string"):
            raise UsageError(f"{ident}: pk_type must be 'number' or 'string', got {pk_type!r}")
        if not primary_key or primary_key in assocs:
            raise UsageError(f"{ident}: invalid primary key attribute {primary_key!r}")
        auto = None if autosubscribe is None else tuple(autosubscribe)
        if auto is not None and not contexts:
            raise UsageError(f"{ident}: autosubscribe only applies with contexts=True")
        spec = ModelSpec(ident, MappingProxyType(assocs), primary_key, pk_type, contexts, auto)
        known = self._specs.get(ident)
        if known is not None and known != spec:
            raise UsageError(f"model {ident!r} is already defined differently: {known}")
        self._specs[ident] = spec
        return spec

    def spec(self, identity: str) -> ModelSpec:
        ident = _identity(identity)
        return self._specs.get(ident) or ModelSpec(ident)

    def is_defined(self, identity: str) -> bool:
        return _identity(identity) in self._specs

    def planner(self, identity: str) -> Planner:
        return Planner(self, identity)

    def model(self, pub: Publisher, identity: str) -> Model:
        return Model(pub, identity, registry=self)


default_registry: Final = ModelRegistry()
"""The registry `pub.model(identity)` and `sync_pub.model(identity)` use."""
define: Final = default_registry.define


# -- steps ---------------------------------------------------------------------------------
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


def _omit(omit: OneOrMany | None) -> tuple[str, ...]:
    return tuple(as_socket_ids(omit))


# -- the planner: Sails' pubsub hook, without I/O --------------------------------------------
class Planner:
    """What one model's pub/sub methods do, as steps. Mirrors Sails' pubsub hook
    (`lib/hooks/pubsub/index.js`): same rooms, payloads, key order and reverse-association
    notices; the blueprint actions built on it live in `publisher.blueprints`."""

    def __init__(self, registry: ModelRegistry, identity: str) -> None:
        self.registry = registry
        self.spec = registry.spec(identity)
        self.identity = self.spec.identity
        self.class_room = f"sails_model_create_{self.identity}"
        self.strict = registry.is_defined(identity)

    def other(self, identity: str) -> Planner:
        return Planner(self.registry, identity)

    # -- ids and rooms ---------------------------------------------------------------------
    def pk_of(self, value: object) -> Id:
        """A record's primary key (as stored); anything else is taken to be the key."""
        if isinstance(value, Mapping):
            if self.spec.primary_key not in value:
                raise UsageError(
                    f"{self.identity} record has no {self.spec.primary_key!r}: {dict(value)!r}"
                )
            value = value[self.spec.primary_key]
        return _scalar(value, f"{self.identity} id")

    def parse_id(self, value: object, what: str = "id") -> Id:
        return coerce_id(self.pk_of(value), self.spec.pk_type, f"{self.identity} {what}")

    def ids(self, ids: IdsLike) -> list[Id]:
        """One id, a record, or a list of either (Sails coerces the same way)."""
        if isinstance(ids, str | int | float | Mapping) or ids is None:
            items: list[object] = [ids]
        else:
            items = list(ids)
        out = [self.pk_of(i) for i in items]
        return list(dict.fromkeys(out))

    def get_room_name(self, id: IdOrRecord) -> str:
        """Sails v1 `Model.getRoomName(id)`: `sails_model_<identity>_<id>:<identity>`."""
        return self._room_name(id, self.identity)

    def room(self, id: IdOrRecord, context: str | None = None) -> str:
        """The room a verb of this model uses: the v1 record room, or with `contexts=True`
        the 0.12 room of that context (`sails_model_user_3:update`)."""
        if not self.spec.contexts:
            return self.get_room_name(id)
        if not context:
            raise UsageError(f"{self.identity} uses 0.12 contexts: name one ({self.contexts()})")
        return self._room_name(id, context)

    def _room_name(self, id: IdOrRecord, suffix: str) -> str:
        return f"sails_model_{self.identity}_{self.pk_of(id)}:{suffix}"

    def contexts(self) -> tuple[str, ...]:
        return self.spec.all_contexts()

    def _rooms(
        self, ids: Iterable[Id], contexts: Iterable[str] | None, default: str
    ) -> tuple[str, ...]:
        if not self.spec.contexts:
            if contexts is not None:
                raise UsageError(
                    f"{self.identity}: contexts need a model defined with contexts=True"
                )
            return tuple(self.get_room_name(i) for i in ids)
        ctx = {"default": self.spec.default_contexts(), "all": self.spec.all_contexts()}[default]
        chosen = tuple(contexts) if contexts is not None else ctx
        return tuple(self._room_name(i, c) for i in ids for c in chosen)

    # -- subscriptions -----------------------------------------------------------------------
    def subscribe(
        self,
        socket_id: str,
        ids: IdsLike,
        contexts: Iterable[str] | None = None,
        *,
        if_connected: bool = False,
    ) -> list[Step]:
        rooms = self._rooms(self.ids(ids), contexts, "default")
        return [Join(check_socket_id(socket_id), rooms, if_connected)] if rooms else []

    def unsubscribe(
        self,
        socket_id: str,
        ids: IdsLike,
        contexts: Iterable[str] | None = None,
        *,
        if_connected: bool = False,
    ) -> list[Step]:
        rooms = self._rooms(self.ids(ids), contexts, "all")
        return [Leave(check_socket_id(socket_id), rooms, if_connected)] if rooms else []

    def watch(self, socket_id: str, *, if_connected: bool = False) -> list[Step]:
        return [Join(check_socket_id(socket_id), (self.class_room,), if_connected)]

    def unwatch(self, socket_id: str) -> list[Step]:
        return [Leave(check_socket_id(socket_id), (self.class_room,))]

    def introduce(self, id: IdOrRecord) -> list[Step]:
        """Every watcher (class-room member, on any gateway) joins the record's room(s)."""
        rooms = self._rooms(self.ids(id), None, "default")
        return [AddMembers(self.class_room, rooms)] if rooms else []

    def retire(self, id: IdOrRecord) -> list[Step]:
        """Every watcher leaves the record's room(s); other subscribers stay (as in Sails)."""
        rooms = self._rooms(self.ids(id), None, "all")
        return [RemoveMembers(self.class_room, rooms)] if rooms else []

    def empty(self, id: IdOrRecord) -> list[Step]:
        """Every member, watcher or not, leaves the record's room(s): what a destroy
        leaves behind (Sails' retire keeps non-watchers in a dead record's room)."""
        return [RemoveMembers(r, (r,)) for r in self._rooms(self.ids(id), None, "all")]

    # -- messages ----------------------------------------------------------------------------
    def _emit(self, rooms: Iterable[str], payload: Any, omit: tuple[str, ...]) -> Emit:
        return Emit(tuple(rooms), self.identity, payload, omit)

    def publish(self, ids: IdsLike, data: Any, omit: OneOrMany | None = None) -> list[Step]:
        """`Model.publish(ids, data, req)`: data as-is on event `<identity>`."""
        rooms = [self.room(i, "message") for i in self.ids(ids)]
        return [self._emit(rooms, data, _omit(omit))] if rooms else []

    def message(self, id: IdOrRecord, data: Any, omit: OneOrMany | None = None) -> list[Step]:
        """Sails 0.12 `Model.message(id, data, req)`: `{verb:'messaged', id, data}`."""
        key = self.parse_id(id)
        payload = {"verb": "messaged", "id": key, "data": data}
        return [self._emit([self.room(key, "message")], payload, _omit(omit))]

    def publish_create(
        self,
        records: Record | Sequence[Record],
        omit: OneOrMany | None = None,
        *,
        introduce: bool = True,
        reverse: bool = True,
    ) -> list[Step]:
        """`_publishCreate`: reverse notices for the associations set on the record, then
        `{verb:'created', data, id}` to the class room, then introduce the watchers."""
        items = [records] if isinstance(records, Mapping) else list(records)
        skip = _omit(omit)
        steps: list[Step] = []
        for record in items:
            if not isinstance(record, Mapping) or record.get(self.spec.primary_key) is None:
                raise UsageError(
                    f"{self.identity}.publish_create needs records with a "
                    f"{self.spec.primary_key!r}, got {record!r}"
                )
            raw = record[self.spec.primary_key]
            key = self.parse_id(raw)
            if reverse:
                steps += self._reverse_of_create(key, record, skip)
            payload = {"verb": "created", "data": dict(record), "id": raw}
            steps.append(self._emit([self.class_room], payload, skip))
            if introduce:
                steps += self.introduce(key)
        return steps

    def publish_update(
        self,
        id: IdOrRecord,
        data: Any,
        *,
        previous: Record | None = None,
        omit: OneOrMany | None = None,
        reverse: bool = True,
    ) -> list[Step]:
        """`_publishUpdate`: with `previous`, reverse notices for every association the
        change touched, then `{verb:'updated', data, id, previous}` to the record room."""
        key = self.parse_id(id)
        skip = _omit(omit)
        steps: list[Step] = []
        if previous is not None and reverse and isinstance(data, Mapping):
            steps += self._reverse_of_update(key, data, previous, skip)
        payload: dict[str, Any] = {"verb": "updated", "data": data, "id": key}
        if previous is not None:
            payload["previous"] = previous
        steps.append(self._emit([self.room(key, "update")], payload, skip))
        return steps

    def publish_destroy(
        self,
        id: IdOrRecord,
        *,
        previous: Record | None = None,
        omit: OneOrMany | None = None,
        reverse: bool = True,
    ) -> list[Step]:
        """`_publishDestroy`: `{verb:'destroyed', id, previous}` to the record room, empty
        that room (watchers and every other subscriber: docs/sails-compat.md), then (with
        `previous`) tell the associated records."""
        key = self.parse_id(id)
        skip = _omit(omit)
        payload: dict[str, Any] = {"verb": "destroyed", "id": key}
        if previous is not None:
            payload["previous"] = previous
        steps: list[Step] = [self._emit([self.room(key, "destroy")], payload, skip)]
        steps += self.empty(key)
        if previous is not None and reverse:
            steps += self._reverse_of_destroy(key, previous, skip)
        return steps

    def publish_add(
        self,
        id: IdOrRecord,
        attribute: str,
        added: IdOrRecord,
        *,
        omit: OneOrMany | None = None,
        reverse: bool = True,
    ) -> list[Step]:
        """`_publishAdd`: `{id, verb:'addedTo', attribute, addedId}` (plus `added` when a
        record is given), then the reverse notice on the child."""
        key = self.parse_id(id)
        assoc, child = self.collection(attribute)
        child_id = self._child_id(child, added, "addedId")
        skip = _omit(omit)
        payload: dict[str, Any] = {
            "id": key,
            "verb": "addedTo",
            "attribute": attribute,
            "addedId": child_id,
        }
        if isinstance(added, Mapping):
            payload["added"] = added
        steps: list[Step] = [self._emit([self.room(key, f"add:{attribute}")], payload, skip)]
        if reverse and assoc is not None and child is not None:
            steps += self._tell(child, attribute, assoc, child_id, key, True, skip)
        return steps

    def publish_remove(
        self,
        id: IdOrRecord,
        attribute: str,
        removed: IdOrRecord,
        *,
        omit: OneOrMany | None = None,
        reverse: bool = True,
    ) -> list[Step]:
        """`_publishRemove`: `{id, verb:'removedFrom', attribute, removedId}`, then the
        reverse notice on the child."""
        key = self.parse_id(id)
        assoc, child = self.collection(attribute)
        child_id = self._child_id(child, removed, "removedId")
        skip = _omit(omit)
        payload = {"id": key, "verb": "removedFrom", "attribute": attribute, "removedId": child_id}
        steps: list[Step] = [self._emit([self.room(key, f"remove:{attribute}")], payload, skip)]
        if reverse and assoc is not None and child is not None:
            steps += self._tell(child, attribute, assoc, child_id, key, False, skip)
        return steps

    # -- associations --------------------------------------------------------------------------
    def association(self, attribute: str) -> Association | None:
        assoc = self.spec.associations.get(attribute)
        if assoc is None and self.strict:
            raise UsageError(
                f"{self.identity} has no association {attribute!r} "
                f"(declared: {', '.join(self.spec.associations) or 'none'})"
            )
        return assoc

    def collection(self, attribute: str) -> tuple[Association | None, Planner | None]:
        """A to-many attribute and the planner of its model; (None, None) for a model
        nobody declared (then child ids are taken as given and nothing is reversed)."""
        if not isinstance(attribute, str) or not attribute:
            raise UsageError(f"attribute must be a non-empty string, got {attribute!r}")
        assoc = self.association(attribute)
        if assoc is None:
            return None, None
        if not assoc.many:
            raise UsageError(
                f"{self.identity}.{attribute} is to-one: addedTo/removedFrom need a collection"
            )
        return assoc, self.other(assoc.model)

    def _child_id(self, child: Planner | None, value: IdOrRecord, what: str) -> Id:
        if child is not None:
            return child.parse_id(value, what)
        return _scalar(value.get("id") if isinstance(value, Mapping) else value, what)

    def child_id(self, attribute: str, value: IdOrRecord) -> Id:
        """The id of a child of collection `attribute`, coerced to the child's key type."""
        return self._child_id(self.collection(attribute)[1], value, f"{attribute} id")

    def reverse_of(
        self, attribute: str, assoc: Association
    ) -> tuple[Planner, str, Association] | None:
        """The other side of `attribute`: its model, attribute name and declaration."""
        other = self.other(assoc.model)
        if assoc.via is not None:
            rev = other.spec.associations.get(assoc.via)
            if rev is not None and rev.model == self.identity:
                return other, assoc.via, rev
            return None
        for name, rev in other.spec.associations.items():
            if rev.model == self.identity and rev.via == attribute:
                return other, name, rev
        return None

    def _tell(
        self,
        child: Planner,
        attribute: str,
        assoc: Association,
        child_id: Id,
        parent_id: Id,
        added: bool,
        skip: tuple[str, ...],
    ) -> list[Step]:
        """The reverse notice of addedTo/removedFrom, on the child's side."""
        found = self.reverse_of(attribute, assoc)
        if found is None:
            return []
        _, rev_name, rev = found
        return child._link(child_id, rev_name, rev, parent_id, added, skip)

    def _link(
        self,
        id: Id,
        attribute: str,
        assoc: Association,
        other_id: Id,
        added: bool,
        skip: tuple[str, ...],
    ) -> list[Step]:
        """Tell record `id` of this model that `other_id` was linked to / unlinked from its
        `attribute`: addedTo/removedFrom for a collection, `updated {attribute: …}` (no
        `previous`) for a to-one. Never reversed again."""
        if assoc.many:
            verb = self.publish_add if added else self.publish_remove
            return verb(id, attribute, other_id, omit=skip, reverse=False)
        value = other_id if added else None
        return self.publish_update(id, {attribute: value}, omit=skip, reverse=False)

    def _reverse_of_create(self, key: Id, record: Record, skip: tuple[str, ...]) -> list[Step]:
        steps: list[Step] = []
        for attribute, value in record.items():
            assoc = self.spec.associations.get(attribute)
            if value is None or assoc is None:
                continue
            found = self.reverse_of(attribute, assoc)
            if found is None:
                continue
            other, rev_name, rev = found
            targets = _as_list(value) if assoc.many else [value]
            for target in targets:
                steps += other._link(other.parse_id(target), rev_name, rev, key, True, skip)
        return steps

    def _reverse_of_update(
        self, key: Id, data: Mapping[str, Any], previous: Record, skip: tuple[str, ...]
    ) -> list[Step]:
        steps: list[Step] = []
        for attribute, value in data.items():
            assoc = self.spec.associations.get(attribute)
            if assoc is None or (attribute in previous and previous[attribute] == value):
                continue
            found = self.reverse_of(attribute, assoc)
            if found is None:
                continue
            other, rev_name, rev = found
            if not assoc.many:
                before = previous.get(attribute)
                old = None if before is None else other.parse_id(before)
                new = None if value is None else other.parse_id(value)
                if old == new:
                    continue
                if old is not None:
                    steps += other._link(old, rev_name, rev, key, False, skip)
                if new is not None:
                    steps += other._link(new, rev_name, rev, key, True, skip)
                continue
            if attribute not in previous:
                continue  # Sails cannot diff a collection it did not populate
            old_ids = [other.parse_id(c) for c in _as_list(previous[attribute])]
            new_ids = [other.parse_id(c) for c in _as_list(value)]
            for gone in dict.fromkeys(i for i in old_ids if i not in new_ids):
                steps += other._link(gone, rev_name, rev, key, False, skip)
            for came in dict.fromkeys(i for i in new_ids if i not in old_ids):
                steps += other._link(came, rev_name, rev, key, True, skip)
        return steps

    def _reverse_of_destroy(self, key: Id, previous: Record, skip: tuple[str, ...]) -> list[Step]:
        steps: list[Step] = []
        for attribute, assoc in self.spec.associations.items():
            value = previous.get(attribute)
            if value is None or (assoc.many and not value):
                continue
            found = self.reverse_of(attribute, assoc)
            if found is None:
                continue
            other, rev_name, rev = found
            targets = _as_list(value) if assoc.many else [value]
            for target in targets:
                steps += other._link(other.parse_id(target), rev_name, rev, key, False, skip)
        return steps


def _as_list(value: object) -> list[object]:
    if isinstance(value, list | tuple):
        return list(value)
    raise UsageError(f"a collection value must be a list of ids or records, got {value!r}")


# -- the async model: plan, then run ------------------------------------------------------------
class Model:
    """`pub.model("user")`. Every coroutine method returns once its broadcasts are
    published and its membership changes are in effect on every gateway; from a
    `SyncPublisher` each one is a blocking call."""

    def __init__(
        self, pub: Publisher, identity: str, *, registry: ModelRegistry | None = None
    ) -> None:
        self._pub = pub
        self.plan = (registry or default_registry).planner(identity)
        self.identity = self.plan.identity

    def __repr__(self) -> str:
        return f"<Model {self.identity}>"

    @property
    def class_room(self) -> str:
        """`sails_model_create_<identity>`: the room of the watchers."""
        return self.plan.class_room

    def get_room_name(self, id: IdOrRecord) -> str:
        return self.plan.get_room_name(id)

    def room(self, id: IdOrRecord, context: str | None = None) -> str:
        return self.plan.room(id, context)

    def contexts(self) -> tuple[str, ...]:
        """Sails 0.12 `getAllContexts()`."""
        return self.plan.contexts()

    async def run(self, steps: Iterable[Step]) -> None:
        """Carry out planned steps in order (see `Planner`, `publisher.blueprints`).

        A join refused by a gateway's room limit does not stop the sequence (the other
        sockets still get their messages): the first such refusal is raised at the end."""
        sockets = self._pub.sockets
        refused: LimitExceeded | None = None
        for step in merge(steps):
            try:
                if isinstance(step, Emit):
                    await sockets.broadcast(
                        list(step.rooms), step.event, step.payload, omit=list(step.omit)
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
    async def subscribe(
        self, socket_id: str, ids: IdsLike, contexts: Iterable[str] | None = None
    ) -> None:
        """Join the socket to the rooms of these records (`contexts`: 0.12 models only)."""
        await self.run(self.plan.subscribe(socket_id, ids, contexts))

    async def unsubscribe(
        self, socket_id: str, ids: IdsLike, contexts: Iterable[str] | None = None
    ) -> None:
        await self.run(self.plan.unsubscribe(socket_id, ids, contexts))

    async def publish(self, ids: IdsLike, data: Any, omit: OneOrMany | None = None) -> None:
        """Send `data` as-is, on event `<identity>`, to the subscribers of these records."""
        await self.run(self.plan.publish(ids, data, omit))

    async def watch(self, socket_id: str) -> None:
        """Join the class room: receive `created` and be introduced to new records."""
        await self.run(self.plan.watch(socket_id))

    async def unwatch(self, socket_id: str) -> None:
        await self.run(self.plan.unwatch(socket_id))

    async def introduce(self, id: IdOrRecord) -> None:
        await self.run(self.plan.introduce(id))

    async def retire(self, id: IdOrRecord) -> None:
        await self.run(self.plan.retire(id))

    # -- the verbs (Sails' _publishX / 0.12 publishX) -----------------------------------------
    async def publish_create(
        self,
        records: Record | Sequence[Record],
        *,
        omit: OneOrMany | None = None,
        introduce: bool = True,
        reverse: bool = True,
    ) -> None:
        await self.run(
            self.plan.publish_create(records, omit, introduce=introduce, reverse=reverse)
        )

    async def publish_update(
        self,
        id: IdOrRecord,
        data: Any,
        *,
        previous: Record | None = None,
        omit: OneOrMany | None = None,
        reverse: bool = True,
    ) -> None:
        await self.run(
            self.plan.publish_update(id, data, previous=previous, omit=omit, reverse=reverse)
        )

    async def publish_destroy(
        self,
        id: IdOrRecord,
        *,
        previous: Record | None = None,
        omit: OneOrMany | None = None,
        reverse: bool = True,
    ) -> None:
        await self.run(self.plan.publish_destroy(id, previous=previous, omit=omit, reverse=reverse))

    async def publish_add(
        self,
        id: IdOrRecord,
        attribute: str,
        added: IdOrRecord,
        *,
        omit: OneOrMany | None = None,
        reverse: bool = True,
    ) -> None:
        await self.run(self.plan.publish_add(id, attribute, added, omit=omit, reverse=reverse))

    async def publish_remove(
        self,
        id: IdOrRecord,
        attribute: str,
        removed: IdOrRecord,
        *,
        omit: OneOrMany | None = None,
        reverse: bool = True,
    ) -> None:
        await self.run(self.plan.publish_remove(id, attribute, removed, omit=omit, reverse=reverse))

    async def message(self, id: IdOrRecord, data: Any, *, omit: OneOrMany | None = None) -> None:
        await self.run(self.plan.message(id, data, omit))

    # -- blueprint parity: one call per blueprint action ---------------------------------------
    async def after_find(
        self,
        records: Sequence[Record],
        *,
        requester: str,
        watch: bool = True,
        associations: Iterable[str] | None = None,
    ) -> None:
        """`GET /model`: subscribe the requester to every record and its populated
        children, watch this model and the associated ones."""
        await self.run(
            blueprints.after_find(
                self.plan, records, requester=requester, watch=watch, associations=associations
            )
        )

    async def after_find_one(
        self,
        record: Record,
        *,
        requester: str,
        watch: bool = True,
        associations: Iterable[str] | None = None,
    ) -> None:
        """`GET /model/:id` (and populate): subscribe to the record and its children, watch
        the associated models (not this one)."""
        await self.run(
            blueprints.after_find_one(
                self.plan, record, requester=requester, watch=watch, associations=associations
            )
        )

    after_populate = after_find_one

    async def after_create(
        self,
        record: Record,
        *,
        requester: str | None = None,
        mirror: bool = False,
        former_parents: Mapping[str, Mapping[Any, Any]] | None = None,
    ) -> None:
        """`POST /model`. `record`: the new record with its associations populated;
        `former_parents`: `{attribute: {child id: the parent it had before}}`."""
        await self.run(
            blueprints.after_create(
                self.plan, record, requester=requester, mirror=mirror, former_parents=former_parents
            )
        )

    async def after_update(
        self,
        id: IdOrRecord,
        values: Mapping[str, Any],
        *,
        previous: Record,
        requester: str | None = None,
        mirror: bool = False,
        former_parents: Mapping[str, Mapping[Any, Any]] | None = None,
    ) -> None:
        """`PATCH /model/:id`. `values`: what was set (sent as `data`); `previous`: the
        populated record before the update."""
        await self.run(
            blueprints.after_update(
                self.plan,
                id,
                values,
                previous=previous,
                requester=requester,
                mirror=mirror,
                former_parents=former_parents,
            )
        )

    async def after_destroy(
        self, previous: Record, *, requester: str | None = None, mirror: bool = False
    ) -> None:
        """`DELETE /model/:id`. `previous`: the populated record that was destroyed."""
        await self.run(
            blueprints.after_destroy(self.plan, previous, requester=requester, mirror=mirror)
        )

    async def after_add(
        self,
        id: IdOrRecord,
        attribute: str,
        child: IdOrRecord,
        *,
        requester: str | None = None,
        mirror: bool = False,
        former_parent: IdOrRecord | None = None,
    ) -> None:
        """`PUT /model/:id/:attribute/:child`. `former_parent`: for a one-to-many, the
        parent the child had before (None if none)."""
        await self.run(
            blueprints.after_add(
                self.plan,
                id,
                attribute,
                child,
                requester=requester,
                mirror=mirror,
                former_parent=former_parent,
            )
        )

    async def after_remove(
        self,
        id: IdOrRecord,
        attribute: str,
        child: IdOrRecord,
        *,
        requester: str | None = None,
        mirror: bool = False,
    ) -> None:
        """`DELETE /model/:id/:attribute/:child`."""
        await self.run(
            blueprints.after_remove(
                self.plan, id, attribute, child, requester=requester, mirror=mirror
            )
        )

    async def after_replace(
        self,
        id: IdOrRecord,
        attribute: str,
        children: Iterable[IdOrRecord],
        *,
        previous: Iterable[IdOrRecord],
        requester: str | None = None,
        mirror: bool = False,
        former_parents: Mapping[Any, Any] | None = None,
    ) -> None:
        """`PUT /model/:id/:attribute` with the new children. `previous`: the children
        before; `former_parents`: `{child id: the parent it had before}` (one-to-many)."""
        await self.run(
            blueprints.after_replace(
                self.plan,
                id,
                attribute,
                children,
                previous=previous,
                requester=requester,
                mirror=mirror,
                former_parents=former_parents,
            )
        )
