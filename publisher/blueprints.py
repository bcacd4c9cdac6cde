"""Blueprint parity: the pub/sub a Sails 1.5 blueprint action performs, given what the
action did (this process has no database: the caller says which records changed and
how). Pure functions returning steps; `Model.after_*` runs them.

Sources: Sails 1.5.18 `lib/hooks/blueprints/actions/*.js` and `actionUtil.subscribeDeep`,
checked against what a real app sent (`sails-transcripts.md`, scenario `rps`).

The requester — the socket whose virtual request triggered the action — is subscribed
as Sails subscribes it and is left out of every message unless `mirror=True`. A
requester that has disconnected meanwhile is skipped (Sails ignores a request that is
not a socket); everybody else is still told.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared.errors import UsageError
from shared.subjects import check_socket_id

if TYPE_CHECKING:
    from publisher.models.ids import Id, IdOrRecord, Record
    from publisher.models.planner import Planner
    from publisher.models.steps import Step


def _who(requester: str | None, mirror: bool) -> tuple[str | None, str | None]:
    """(socket to subscribe, socket to leave out)."""
    if requester is None:
        return None, None
    sid = check_socket_id(requester)
    return sid, None if mirror else sid


def subscribe_deep(
    p: Planner,
    requester: str,
    record: Record,
    *,
    watch: bool = True,
    associations: Iterable[str] | None = None,
) -> list[Step]:
    """`actionUtil.subscribeDeep`: for each association, watch the associated model
    (autoWatch) and subscribe to the populated children / the populated parent."""
    steps: list[Step] = []
    names = list(p.spec.associations) if associations is None else list(associations)
    for attribute in names:
        assoc = p.association(attribute)
        if assoc is None:
            continue
        other = p.other(assoc.model)
        if watch:
            steps += other.watch(requester, if_connected=True)
        value = record.get(attribute)
        if assoc.many and isinstance(value, list | tuple) and value:
            steps += other.subscribe(requester, [other.pk_of(c) for c in value], if_connected=True)
        elif not assoc.many and isinstance(value, Mapping):
            steps += other.subscribe(requester, [other.pk_of(value)], if_connected=True)
    return steps


def after_find(
    p: Planner,
    records: Sequence[Record],
    *,
    requester: str,
    watch: bool = True,
    associations: Iterable[str] | None = None,
) -> list[Step]:
    """`GET /model` (`find`): subscribe the requester to every record, watch the model,
    subscribeDeep each record (so the associated models are watched only when something
    was found, as in Sails)."""
    sid = check_socket_id(requester)
    found = list(records)
    steps = p.subscribe(sid, [p.pk_of(r) for r in found], if_connected=True) if found else []
    if watch:
        steps += p.watch(sid, if_connected=True)
    names = None if associations is None else list(associations)
    for record in found:
        if isinstance(record, Mapping):
            steps += subscribe_deep(p, sid, record, watch=watch, associations=names)
    return steps


def after_find_one(
    p: Planner,
    record: Record,
    *,
    requester: str,
    watch: bool = True,
    associations: Iterable[str] | None = None,
) -> list[Step]:
    """`GET /model/:id` (`findOne`, and `populate`): subscribe to the record and
    subscribeDeep (its children, the associated models watched); the model itself is not
    watched. For `populate` too every associated model is watched, not only the
    populated one, as Sails does: keep `associations` at its default."""
    sid = check_socket_id(requester)
    steps = p.subscribe(sid, [p.pk_of(record)], if_connected=True)
    return steps + subscribe_deep(p, sid, record, watch=watch, associations=associations)


def after_create(
    p: Planner,
    record: Record,
    *,
    requester: str | None = None,
    mirror: bool = False,
    former_parents: Mapping[str, Mapping[Any, Any]] | None = None,
) -> list[Step]:
    """`POST /model` (`create`): subscribe the requester to the new record, introduce the
    watchers, then the reverse notices, `created` (populated record) and `removedFrom`
    to the former parents of the children it took over. `record`: the new record with
    its associations populated; `former_parents`: `{attribute: {child id: the parent it
    had before}}`."""
    sid, omit = _who(requester, mirror)
    if not isinstance(record, Mapping):
        raise UsageError(f"{p.identity}: after_create needs the new record, got {record!r}")
    key = p.parse_id(record)
    steps = p.subscribe(sid, [key], if_connected=True) if sid else []
    steps += p.introduce(key)
    steps += p.publish_create(record, omit=omit, introduce=False)
    for attribute in _declared_order(p, former_parents or {}):
        pairs = (former_parents or {})[attribute].items()
        steps += _stolen(p, attribute, pairs, key, omit)
    return steps


def after_update(
    p: Planner,
    id: IdOrRecord,
    values: Mapping[str, Any],
    *,
    previous: Record,
    requester: str | None = None,
    mirror: bool = False,
    former_parents: Mapping[str, Mapping[Any, Any]] | None = None,
) -> list[Step]:
    """`PATCH /model/:id` (`update`): subscribe the requester, then the reverse notices
    and `updated` with `previous` — including for a collection set through the update,
    which Sails' Waterline drops silently (rps.27; docs/sails-compat.md). `values`: what
    was set (sent as `data`); `previous`: the populated record before the update."""
    sid, omit = _who(requester, mirror)
    key = p.parse_id(id)
    steps = p.subscribe(sid, [key], if_connected=True) if sid else []
    steps += p.publish_update(key, values, previous=previous, omit=omit)
    for attribute in _declared_order(p, former_parents or {}):
        pairs = (former_parents or {})[attribute].items()
        steps += _stolen(p, attribute, pairs, key, omit)
    return steps


def after_destroy(
    p: Planner, previous: Record, *, requester: str | None = None, mirror: bool = False
) -> list[Step]:
    """`DELETE /model/:id` (`destroy`): `destroyed` with `previous` (the populated record
    that was destroyed), the record's room emptied (the requester, the watchers and
    everyone else leave it), the reverse notices."""
    _, omit = _who(requester, mirror)
    return p.publish_destroy(p.parse_id(previous), previous=previous, omit=omit)


def after_add(
    p: Planner,
    id: IdOrRecord,
    attribute: str,
    child: IdOrRecord,
    *,
    requester: str | None = None,
    mirror: bool = False,
    former_parent: IdOrRecord | None = None,
) -> list[Step]:
    """`PUT /model/:id/:attribute/:child` (`add`): subscribe the requester to parent and
    child, `addedTo` plus its reverse, then `removedFrom` to the child's former parent
    (`former_parent`: for a one-to-many, the parent the child had before, None if none)
    — unless that is this very parent (Sails sends it anyway, rps.20;
    docs/sails-compat.md)."""
    sid, omit = _who(requester, mirror)
    key = p.parse_id(id)
    child_id = p.child_id(attribute, child)
    _, other = p.collection(attribute)
    steps = p.subscribe(sid, [key], if_connected=True) if sid else []
    if sid and other is not None:
        steps += other.subscribe(sid, [child_id], if_connected=True)
    steps += p.publish_add(key, attribute, child_id, omit=omit)
    if former_parent is not None:
        steps += _stolen(p, attribute, [(child_id, former_parent)], key, omit)
    return steps


def after_remove(
    p: Planner,
    id: IdOrRecord,
    attribute: str,
    child: IdOrRecord,
    *,
    requester: str | None = None,
    mirror: bool = False,
) -> list[Step]:
    """`DELETE /model/:id/:attribute/:child` (`remove`): `removedFrom` plus its reverse;
    no subscription."""
    _, omit = _who(requester, mirror)
    child_id = p.child_id(attribute, child)
    return p.publish_remove(id, attribute, child_id, omit=omit)


def after_replace(
    p: Planner,
    id: IdOrRecord,
    attribute: str,
    children: Iterable[IdOrRecord],
    *,
    previous: Iterable[IdOrRecord],
    requester: str | None = None,
    mirror: bool = False,
    former_parents: Mapping[Any, Any] | None = None,
) -> list[Step]:
    """`PUT /model/:id/:attribute` (`replace`) with the new children: one `addedTo`
    (+ reverse) per new child, `removedFrom` to the former parents of the children taken
    over (`former_parents`: `{child id: the parent it had before}`, one-to-many), then
    one `removedFrom` (+ reverse) per child of `previous` no longer in the collection."""
    sid, omit = _who(requester, mirror)
    key = p.parse_id(id)
    _, other = p.collection(attribute)
    new = list(dict.fromkeys(p.child_id(attribute, c) for c in children))
    old = list(dict.fromkeys(p.child_id(attribute, c) for c in previous))
    added = [c for c in new if c not in old]
    removed = [c for c in old if c not in new]
    steps = p.subscribe(sid, [key], if_connected=True) if sid else []
    if sid and other is not None and added:
        steps += other.subscribe(sid, added, if_connected=True)
    for child_id in added:
        steps += p.publish_add(key, attribute, child_id, omit=omit)
    if former_parents:
        formers = {p.child_id(attribute, c): parent for c, parent in former_parents.items()}
        strays = [c for c in formers if c not in new]
        if strays:
            raise UsageError(
                f"former_parents names children that are not in the collection: {strays}"
            )
        steps += _stolen(p, attribute, [(c, formers[c]) for c in new if c in formers], key, omit)
    for child_id in removed:
        steps += p.publish_remove(key, attribute, child_id, omit=omit)
    return steps


def _declared_order(p: Planner, by_attribute: Mapping[str, Any]) -> list[str]:
    order = {name: i for i, name in enumerate(p.spec.associations)}
    return sorted(by_attribute, key=lambda a: order.get(a, len(order)))


def _stolen(
    p: Planner,
    attribute: str,
    pairs: Iterable[tuple[Any, Any]],
    new_parent: Id,
    omit: str | None,
) -> list[Step]:
    """`removedFrom` (no reverse) to each child's former parent in a one-to-many."""
    assoc, _ = p.collection(attribute)
    if assoc is not None:
        found = p.reverse_of(attribute, assoc)
        if found is None or found[2].many:
            raise UsageError(
                f"{p.identity}.{attribute}: a former parent only exists when the child side "
                "is to-one (a one-to-many declared on both sides)"
            )
    steps: list[Step] = []
    for child, parent in pairs:
        if parent is None or p.parse_id(parent, "former parent") == new_parent:
            continue
        steps += p.publish_remove(parent, attribute, child, omit=omit, reverse=False)
    return steps
