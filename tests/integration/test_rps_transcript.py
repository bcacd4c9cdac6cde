"""Replay the recorded Sails scenario `rps` (tests/support/rps_steps.py, from
../shared/reference/sails-transcripts.md) through the publisher, against three real
gateways with one real client each, and compare what every socket received with what
the clients of the real Sails 1.5.18 app received: event names, payloads, key order,
arrival order. Timestamps are normalised to `<ts>`, socket ids to `<self>`.

There is no database here: `Db` keeps the user/pet/tag records the way sails-disk did,
each step changes it as the recorded request did and then makes the one blueprint-parity
call a worker would make. Steps where Sails contradicts itself (DIVERGENT) are asserted
to behave the right way; docs/sails-compat.md lists them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher, SyncPublisher
from publisher.models import define, to_many, to_one
from tests.helpers import GatewayProcess, RecordingClient, quiet
from tests.support.rps_steps import FULL, STEPS

pytestmark = pytest.mark.integration

# The models of the recorded app, declared once in the default registry, the one
# `pub.model()` and `sync_pub.model()` use.
define("user", {"pets": to_many("pet", via="owner"), "tags": to_many("tag", via="users")})
define("pet", {"owner": to_one("user")})
define("tag", {"users": to_many("user", via="tags")})

SYNC_STEPS = frozenset({"17", "29", "33", "39", "40"})
"""Steps replayed through the SyncPublisher (blocking calls in a worker thread)."""

DIVERGENT: dict[str, dict[str, tuple[str, ...]]] = {
    # Sails sends removedFrom to the parent the pet was just (re)added to; we do not.
    "20": {
        "B": (
            'user {"id":2,"verb":"addedTo","attribute":"pets","addedId":2}',
            'pet {"verb":"updated","data":{"owner":2},"id":2}',
        ),
    },
    # Sails' Waterline drops a collection set through PATCH from the broadcast and tells
    # nobody; we send the values set and tell the other side (B watches tag 1 only).
    "27": {
        "B": (
            'tag {"id":1,"verb":"addedTo","attribute":"users","addedId":1}',
            'user {"verb":"updated","data":{"tags":[1,2],"id":1,"updatedAt":"<ts>"},"id":1,'
            '"previous":{"pets":[],"tags":[],"createdAt":"<ts>","updatedAt":"<ts>","id":1,'
            '"name":"alice"}}',
        ),
    },
}


# -- what the recording's database held ------------------------------------------------
Row = dict[str, Any]


@dataclass
class Db:
    users: dict[int, Row] = field(default_factory=dict)
    pets: dict[int, Row] = field(default_factory=dict)
    tags: dict[int, Row] = field(default_factory=dict)
    links: list[tuple[int, int]] = field(default_factory=list)
    """user.tags <-> tag.users as (user id, tag id)."""
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1764000000000))
    _ids: dict[str, itertools.count[int]] = field(default_factory=dict)

    def now(self) -> int:
        return next(self._clock)

    def insert(self, table: str, **values: Any) -> int:
        rows: dict[int, Row] = getattr(self, table)
        new_id = next(self._ids.setdefault(table, itertools.count(1)))
        ts = self.now()
        rows[new_id] = {"createdAt": ts, "updatedAt": ts, "id": new_id, **values}
        return new_id

    # records the way the blueprints return them (association keys first when populated)
    def user_row(self, uid: int) -> Row:
        return dict(self.users[uid])

    def pet_row(self, pid: int) -> Row:
        return dict(self.pets[pid])

    def tag_row(self, tid: int) -> Row:
        return dict(self.tags[tid])

    def pets_of(self, uid: int) -> list[int]:
        return sorted(p for p, row in self.pets.items() if row["owner"] == uid)

    def tags_of(self, uid: int) -> list[int]:
        return sorted(t for u, t in self.links if u == uid)

    def user(self, uid: int) -> Row:
        return {
            "pets": [self.pet_row(p) for p in self.pets_of(uid)],
            "tags": [self.tag_row(t) for t in self.tags_of(uid)],
            **self.user_row(uid),
        }

    def pet(self, pid: int) -> Row:
        row = self.pet_row(pid)
        owner = row["owner"]
        row["owner"] = None if owner is None else self.user_row(owner)
        return row

    def tag(self, tid: int) -> Row:
        users = sorted(u for u, t in self.links if t == tid)
        return {"users": [self.user_row(u) for u in users], **self.tag_row(tid)}

    def link(self, uid: int, tid: int) -> None:
        if (uid, tid) not in self.links:
            self.links.append((uid, tid))

    def unlink(self, uid: int, tid: int) -> None:
        self.links = [pair for pair in self.links if pair != (uid, tid)]


# -- normalising what a client received -------------------------------------------------
def normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "<ts>" if k in ("createdAt", "updatedAt") else normalise(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def full(events: list[tuple[str, Any]]) -> list[str]:
    """`event <JSON>` in wire key order (the client keeps the order of the JSON text)."""
    return [f"{e} {orjson.dumps(normalise(d)).decode()}" for e, d in events]


def abbreviated(events: list[tuple[str, Any]]) -> list[str]:
    """The transcript's per-step notation: `event:verb {rest}`, data as "{keys}",
    previous as "{…}"."""
    out = []
    for event, data in events:
        body = {}
        for k, v in data.items():
            if k == "verb":
                continue
            if k == "data" and isinstance(v, dict):
                v = "{" + ",".join(v) + "}"
            elif k == "previous":
                v = "{…}"
            body[k] = v
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        out.append(f"{event}:{data.get('verb')} {text}")
    return out


# -- the scenario ---------------------------------------------------------------------------
@dataclass
class Scenario:
    pub: Publisher
    sync: SyncPublisher
    sockets: dict[str, RecordingClient]
    db: Db = field(default_factory=Db)
    step: str = ""

    def sid(self, name: str) -> str:
        return self.sockets[name].sid

    async def call(self, identity: str, method: str, *args: Any, **kwargs: Any) -> None:
        """One publisher call, async or (SYNC_STEPS) blocking in a worker thread."""
        if self.step in SYNC_STEPS:

            def blocking() -> None:
                getattr(self.sync.model(identity), method)(*args, **kwargs)
                self.sync.flush()  # ordered before the async publisher's markers

            await asyncio.to_thread(blocking)
        else:
            await getattr(self.pub.model(identity), method)(*args, **kwargs)

    # blueprint actions, as the recorded app ran them
    async def post_user(
        self, by: str, name: str, pets: tuple[int, ...] = (), tags: tuple[int, ...] = ()
    ) -> None:
        uid = self.db.insert("users", name=name)
        formers = {}
        for pid in pets:
            formers[pid] = self.db.pets[pid]["owner"]
            self.db.pets[pid]["owner"] = uid
        for tid in tags:
            self.db.link(uid, tid)
        stolen = {"pets": formers} if formers else None
        await self.call(
            "user", "after_create", self.db.user(uid), requester=self.sid(by), former_parents=stolen
        )

    async def post_pet(self, by: str, name: str, owner: int | None = None) -> None:
        pid = self.db.insert("pets", name=name, owner=owner)
        await self.call("pet", "after_create", self.db.pet(pid), requester=self.sid(by))

    async def post_tag(self, by: str, name: str) -> None:
        tid = self.db.insert("tags", name=name)
        await self.call("tag", "after_create", self.db.tag(tid), requester=self.sid(by))

    async def patch(self, by: str, identity: str, rid: int, values: dict[str, Any]) -> None:
        previous = getattr(self.db, identity)(rid)
        table = getattr(self.db, identity + "s")
        for key, value in values.items():
            if key == "tags":
                for tid in self.db.tags_of(rid):
                    self.db.unlink(rid, tid)
                for tid in value:
                    self.db.link(rid, tid)
            else:
                table[rid][key] = value
        table[rid]["updatedAt"] = self.db.now()
        # Waterline normalises valuesToSet in place: the pk and updatedAt join the values
        data = {**values, "id": rid, "updatedAt": table[rid]["updatedAt"]}
        await self.call(
            identity, "after_update", str(rid), data, previous=previous, requester=self.sid(by)
        )

    async def add_pet(self, by: str, uid: int, pid: int) -> None:
        former = self.db.pets[pid]["owner"]
        self.db.pets[pid]["owner"] = uid
        await self.call(
            "user", "after_add", uid, "pets", pid, requester=self.sid(by), former_parent=former
        )

    async def add_tag(self, by: str, uid: int, tid: int, via: str = "user") -> None:
        self.db.link(uid, tid)
        if via == "user":
            await self.call("user", "after_add", uid, "tags", tid, requester=self.sid(by))
        else:
            await self.call("tag", "after_add", tid, "users", uid, requester=self.sid(by))

    async def remove(self, by: str, uid: int, attribute: str, child: int) -> None:
        if attribute == "pets":
            self.db.pets[child]["owner"] = None
        else:
            self.db.unlink(uid, child)
        await self.call("user", "after_remove", uid, attribute, child, requester=self.sid(by))

    async def replace_tags(self, by: str, uid: int, tids: list[int]) -> None:
        before = self.db.tags_of(uid)
        for tid in before:
            self.db.unlink(uid, tid)
        for tid in tids:
            self.db.link(uid, tid)
        await self.call(
            "user", "after_replace", uid, "tags", tids, previous=before, requester=self.sid(by)
        )

    async def replace_pets(self, by: str, uid: int, pids: list[int]) -> None:
        before = self.db.pets_of(uid)
        formers = {pid: self.db.pets[pid]["owner"] for pid in pids}
        for pid in before:
            self.db.pets[pid]["owner"] = None
        for pid in pids:
            self.db.pets[pid]["owner"] = uid
        await self.call(
            "user",
            "after_replace",
            uid,
            "pets",
            pids,
            previous=before,
            requester=self.sid(by),
            former_parents=formers,
        )

    async def delete(self, by: str, identity: str, rid: int) -> None:
        previous = getattr(self.db, identity)(rid)
        if identity == "user":
            for pid in self.db.pets_of(rid):
                self.db.pets[pid]["owner"] = None
            self.db.links = [(u, t) for u, t in self.db.links if u != rid]
        getattr(self.db, identity + "s").pop(rid)
        await self.call(identity, "after_destroy", previous, requester=self.sid(by))

    async def find_users(self, by: str) -> None:
        records = [self.db.user(uid) for uid in sorted(self.db.users)]
        await self.call("user", "after_find", records, requester=self.sid(by))

    async def find_one(self, by: str, identity: str, rid: int) -> None:
        record = getattr(self.db, identity)(rid)
        await self.call(identity, "after_find_one", record, requester=self.sid(by))

    async def publish(self, ids: list[int], data: Any, omit: str | None = None) -> None:
        await self.call("user", "publish", ids, data, None if omit is None else self.sid(omit))

    async def rooms(self, who: str) -> None:
        """`GET /room/rooms`: compared with the recording after the step (see run)."""


ACTIONS: dict[str, Callable[[Scenario], Awaitable[None]]] = {
    "01": lambda s: s.post_user("A", "alice"),
    "02": lambda s: s.post_user("A", "bob"),
    "03": lambda s: s.post_pet("A", "rex", owner=1),
    "04": lambda s: s.post_pet("A", "tom"),
    "05": lambda s: s.post_pet("A", "fido", owner=2),
    "06": lambda s: s.post_tag("A", "red"),
    "07": lambda s: s.post_tag("A", "blue"),
    "08": lambda s: s.find_users("B"),
    "09": lambda s: s.find_one("B", "user", 1),
    "10": lambda s: s.find_one("B", "pet", 2),
    "11": lambda s: s.find_one("B", "tag", 1),
    "12": lambda s: s.rooms("A"),
    "13": lambda s: s.rooms("B"),
    "14": lambda s: s.rooms("C"),
    "15": lambda s: s.post_user("A", "carol"),
    "16": lambda s: s.post_user("A", "dave", pets=(1,), tags=(1,)),
    "17": lambda s: s.patch("A", "user", 3, {"name": "caroline"}),
    "18": lambda s: s.add_pet("A", 3, 2),
    "19": lambda s: s.add_pet("A", 2, 2),
    "20": lambda s: s.add_pet("A", 2, 2),
    "21": lambda s: s.remove("A", 2, "pets", 2),
    "22": lambda s: s.patch("A", "pet", 1, {"owner": 3}),
    "23": lambda s: s.patch("A", "pet", 1, {"owner": None}),
    "24": lambda s: s.add_tag("A", 1, 1),
    "25": lambda s: s.add_tag("A", 2, 2, via="tag"),
    "26": lambda s: s.remove("A", 1, "tags", 1),
    "27": lambda s: s.patch("A", "user", 1, {"tags": [1, 2]}),
    "28": lambda s: s.replace_tags("A", 1, [2]),
    "29": lambda s: s.replace_pets("A", 3, [1, 3]),
    "30": lambda s: s.post_pet("A", "kitty", owner=1),
    "31": lambda s: s.delete("A", "pet", 4),
    "32": lambda s: s.add_pet("A", 4, 2),
    "33": lambda s: s.delete("A", "user", 4),
    "34": lambda s: s.publish([4], {"verb": "probe", "after": "destroy"}),
    "35": lambda s: s.patch("B", "user", 1, {"name": "alice2"}),
    "36": lambda s: s.find_users("A"),
    "37": lambda s: s.post_user("A", "erin"),
    "38": lambda s: s.post_user("B", "frank"),
    "39": lambda s: s.publish([1], {"verb": "custom", "hello": 1}),
    "40": lambda s: s.publish([1], {"verb": "custom", "hello": 2}, omit="A"),
    "41": lambda s: s.rooms("B"),
}


async def test_every_recorded_rps_step(
    gateway_factory: Callable[..., GatewayProcess],
    publisher: Publisher,
    client_factory: Callable[..., Awaitable[RecordingClient]],
    nats_server: EmbeddedNats,
    prefix: str,
) -> None:
    assert sorted(ACTIONS) == sorted(STEPS), "every recorded step has an action"
    gws = [gateway_factory("gwa"), gateway_factory("gwb"), gateway_factory("gwc")]
    sockets = {name: await client_factory(gw) for name, gw in zip("ABC", gws, strict=True)}
    clients = list(sockets.values())
    sync = await asyncio.to_thread(SyncPublisher, nats_server.url, prefix=prefix)
    scenario = Scenario(publisher, sync, sockets)
    try:
        for step, recorded in STEPS.items():
            scenario.step = step
            await ACTIONS[step](scenario)
            await quiet(clients, publisher)
            where = f"rps.{step} ({recorded.request})"
            for name, client in sockets.items():
                got = client.events
                if step in DIVERGENT:
                    assert full(got) == list(DIVERGENT[step].get(name, ())), f"{where} {name}"
                else:
                    assert abbreviated(got) == list(getattr(recorded, name)), f"{where} {name}"
                    if step in FULL:
                        assert full(got) == list(FULL[step].get(name, ())), f"{where} {name}"
            if recorded.rooms is not None:
                me = sockets[recorded.actor].sid
                rooms = await publisher.sockets.rooms(me)
                assert ["<self>", *sorted(r for r in rooms if r != me)] == list(recorded.rooms)
                assert me in rooms, where
            for client in clients:
                client.events.clear()
    finally:
        await asyncio.to_thread(sync.close)


async def test_recorded_divergences_are_what_sails_sent() -> None:
    """DIVERGENT differs from the recording exactly where docs/sails-compat.md says."""
    assert set(DIVERGENT) == {"20", "27"}
    assert list(DIVERGENT["20"]["B"]) == list(FULL["20"]["B"][:2])  # minus removedFrom bob
    assert (
        FULL["20"]["B"][2] == 'user {"id":2,"verb":"removedFrom","attribute":"pets","removedId":2}'
    )
    assert FULL["27"]["B"][0].startswith('user {"verb":"updated","data":{"id":1,')


# -- beyond the recording ---------------------------------------------------------------------
async def test_legacy_contexts_mirror_and_a_vanished_requester(
    two_gateways: list[GatewayProcess],
    publisher: Publisher,
    client_factory: Callable[..., Awaitable[RecordingClient]],
) -> None:
    """0.12 context rooms across gateways; `mirror=True` lets the requester hear its own
    action; a requester that disconnected does not stop the others being told."""
    define("note", {"tags": to_many("tag")}, contexts=True, autosubscribe=["update", "message"])
    note = publisher.model("note")
    a = await client_factory(two_gateways[0])
    b = await client_factory(two_gateways[1])
    gone = await client_factory(two_gateways[1])
    await note.subscribe(a.sid, [7])  # autosubscribe: update + message
    await note.subscribe(b.sid, [7], contexts=["destroy"])
    await note.watch(b.sid)
    assert sorted(await publisher.sockets.rooms(a.sid)) == sorted(
        [a.sid, "sails_model_note_7:update", "sails_model_note_7:message"]
    )
    await note.publish_update(7, {"title": "x"})
    await note.message(7, {"hi": 1})
    await note.publish_destroy(7, previous={"id": 7, "title": "x"})
    await quiet([a, b], publisher)
    assert full(a.events) == [
        'note {"verb":"updated","data":{"title":"x"},"id":7}',
        'note {"verb":"messaged","id":7,"data":{"hi":1}}',
    ]
    assert full(b.events) == ['note {"verb":"destroyed","id":7,"previous":{"id":7,"title":"x"}}']
    a.events.clear()
    b.events.clear()

    # a watcher is introduced to the autosubscribe contexts of a new record only
    gone_sid = gone.sid
    await gone.disconnect()
    # wait until its gateway has forgotten it (a request racing the disconnect itself
    # may go unanswered: that case costs a timeout, not the notices)
    deadline = asyncio.get_running_loop().time() + 10
    while two_gateways[1].metric("sailcast_gateway_connections") != 1:
        assert asyncio.get_running_loop().time() < deadline, "disconnect not seen"
        await asyncio.sleep(0.02)
    await note.after_create({"id": 8, "title": "y"}, requester=gone_sid)
    await note.publish_update("8", {"title": "z"}, omit=gone_sid)
    await note.after_update(8, {"title": "w"}, previous={"id": 8}, requester=b.sid, mirror=True)
    await quiet([a, b], publisher)
    assert a.events == []
    assert full(b.events) == [
        'note {"verb":"created","data":{"id":8,"title":"y"},"id":8}',
        'note {"verb":"updated","data":{"title":"z"},"id":8}',
        'note {"verb":"updated","data":{"title":"w"},"id":8,"previous":{"id":8}}',
    ]
    assert "sails_model_note_8:destroy" not in await publisher.sockets.rooms(b.sid)
