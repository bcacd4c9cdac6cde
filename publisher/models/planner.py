"""The planner: Sails' pubsub hook as a pure function from a call to its steps (no I/O).
`publisher.models.model.Model` runs what it plans; `publisher.blueprints` builds on it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from publisher.models.ids import Id, IdOrRecord, IdsLike, Record, coerce_id, scalar_id
from publisher.models.registry import Association, ModelRegistry, as_contexts
from publisher.models.steps import AddMembers, Emit, Join, Leave, RemoveMembers, Step
from publisher.sockets import OneOrMany, as_socket_ids
from shared.errors import InvalidRoomName, UsageError
from shared.subjects import check_socket_id


def _omit(omit: OneOrMany | None) -> tuple[str, ...]:
    return tuple(as_socket_ids(omit))


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
        return scalar_id(value, f"{self.identity} id")

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
        if not isinstance(context, str):
            raise InvalidRoomName(f"context must be a string, got {context!r}")
        return self._room_name(id, context)

    def _room_name(self, id: IdOrRecord, suffix: str) -> str:
        return f"sails_model_{self.identity}_{self.pk_of(id)}:{suffix}"

    def contexts(self) -> tuple[str, ...]:
        return self.spec.all_contexts()

    def _rooms(
        self, ids: Iterable[Id], contexts: str | Iterable[str] | None, default: str
    ) -> tuple[str, ...]:
        if not self.spec.contexts:
            if contexts is not None:
                raise UsageError(
                    f"{self.identity}: contexts need a model defined with contexts=True"
                )
            return tuple(self.get_room_name(i) for i in ids)
        ctx = {"default": self.spec.default_contexts(), "all": self.spec.all_contexts()}[default]
        chosen = as_contexts(contexts) if contexts is not None else ctx
        return tuple(self._room_name(i, c) for i in ids for c in chosen)

    # -- subscriptions -----------------------------------------------------------------------
    def subscribe(
        self,
        socket_id: str,
        ids: IdsLike,
        contexts: str | Iterable[str] | None = None,
        *,
        if_connected: bool = False,
    ) -> list[Step]:
        """Join the socket to the rooms of these records (`contexts`: 0.12 models only)."""
        rooms = self._rooms(self.ids(ids), contexts, "default")
        return [Join(check_socket_id(socket_id), rooms, if_connected)] if rooms else []

    def unsubscribe(
        self,
        socket_id: str,
        ids: IdsLike,
        contexts: str | Iterable[str] | None = None,
        *,
        if_connected: bool = False,
    ) -> list[Step]:
        rooms = self._rooms(self.ids(ids), contexts, "all")
        return [Leave(check_socket_id(socket_id), rooms, if_connected)] if rooms else []

    def watch(self, socket_id: str, *, if_connected: bool = False) -> list[Step]:
        """Join the class room: receive `created` and be introduced to new records."""
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

    def message(self, id: IdOrRecord, data: Any, *, omit: OneOrMany | None = None) -> list[Step]:
        """Sails 0.12 `Model.message(id, data, req)`: `{verb:'messaged', id, data}`."""
        key = self.parse_id(id)
        payload = {"verb": "messaged", "id": key, "data": data}
        return [self._emit([self.room(key, "message")], payload, _omit(omit))]

    def publish_create(
        self,
        records: Record | Sequence[Record],
        *,
        omit: OneOrMany | None = None,
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
        return scalar_id(value.get("id") if isinstance(value, Mapping) else value, what)

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
