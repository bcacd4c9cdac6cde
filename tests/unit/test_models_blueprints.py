"""Blueprint parity without I/O: each `after_*` plan is applied to an in-memory room
table that behaves like the cluster (join, leave, add/remove room members, broadcast
once per socket minus omit), and the test asserts what each socket would receive."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

import orjson
import pytest

from publisher import blueprints as bp
from publisher.models import (
    AddMembers,
    Emit,
    Join,
    Leave,
    Model,
    ModelRegistry,
    Planner,
    RemoveMembers,
    Step,
    merge,
    to_many,
    to_one,
)
from shared.errors import GatewayTimeout, NoSuchSocket, UsageError

TS = "<ts>"


class Rooms:
    """What the gateways do with the steps, in one dict."""

    def __init__(self, *sockets: str) -> None:
        self.rooms: dict[str, set[str]] = {s: {s} for s in sockets}
        self.got: dict[str, list[str]] = {s: [] for s in sockets}

    def members(self, room: str) -> list[str]:
        return [s for s, rs in self.rooms.items() if room in rs]

    def apply(self, steps: Iterable[Step]) -> Rooms:
        for step in merge(steps):
            if isinstance(step, Emit):
                text = f"{step.event} {orjson.dumps(step.payload).decode()}"
                targets = {m for r in step.rooms for m in self.members(r)} - set(step.omit)
                for s in sorted(targets):
                    self.got[s].append(text)
            elif isinstance(step, Join):
                self.rooms[step.socket_id].update(step.rooms)
            elif isinstance(step, Leave):
                self.rooms[step.socket_id].difference_update(step.rooms)
            elif isinstance(step, AddMembers):
                for m in self.members(step.source):
                    self.rooms[m].update(step.rooms)
            elif isinstance(step, RemoveMembers):
                for m in self.members(step.source):
                    self.rooms[m].difference_update(step.rooms)
        return self

    def take(self, sid: str) -> list[str]:
        out, self.got[sid] = self.got[sid], []
        return out


@pytest.fixture
def reg() -> ModelRegistry:
    r = ModelRegistry()
    r.define("user", {"pets": to_many("pet", via="owner"), "tags": to_many("tag", via="users")})
    r.define("pet", {"owner": to_one("user")})
    r.define("tag", {"users": to_many("user", via="tags")})
    return r


def planners(reg: ModelRegistry) -> tuple[Planner, Planner, Planner]:
    return Planner(reg, "user"), Planner(reg, "pet"), Planner(reg, "tag")


def row(id: int, name: str, **more: object) -> dict[str, object]:
    return {"createdAt": TS, "updatedAt": TS, "id": id, "name": name, **more}


def test_find_subscribes_deep_and_watches_the_associated_models(reg: ModelRegistry) -> None:
    user, pet, _ = planners(reg)
    alice = {"pets": [row(1, "rex", owner=1)], "tags": [], **row(1, "alice")}
    bob = {"pets": [row(3, "fido", owner=2)], "tags": [], **row(2, "bob")}
    net = Rooms("B").apply(bp.after_find(user, [alice, bob], requester="B"))
    assert sorted(net.rooms["B"] - {"B"}) == [
        "sails_model_create_pet",
        "sails_model_create_tag",
        "sails_model_create_user",
        "sails_model_pet_1:pet",
        "sails_model_pet_3:pet",
        "sails_model_user_1:user",
        "sails_model_user_2:user",
    ]
    # one membership request for the whole find
    assert len(merge(bp.after_find(user, [alice, bob], requester="B"))) == 1
    # nothing found: the model is watched, the associated ones are not (as in Sails)
    assert Rooms("B").apply(bp.after_find(user, [], requester="B")).rooms["B"] == {
        "B",
        "sails_model_create_user",
    }
    # autoWatch off, and only the associations the route populated
    net = Rooms("B").apply(
        bp.after_find(user, [alice], requester="B", watch=False, associations=["tags"])
    )
    assert net.rooms["B"] == {"B", "sails_model_user_1:user"}
    # findOne of a pet: subscribe + watch the owner's model, not pet itself
    net = Rooms("B").apply(
        bp.after_find_one(pet, row(2, "tom", owner=row(4, "dave")), requester="B")
    )
    assert net.rooms["B"] == {
        "B",
        "sails_model_pet_2:pet",
        "sails_model_create_user",
        "sails_model_user_4:user",
    }


def test_create_reproduces_rps16(reg: ModelRegistry) -> None:
    user, pet, tag = planners(reg)
    net = Rooms("A", "B")
    net.apply(user.watch("B") + user.subscribe("B", [1]) + pet.subscribe("B", [1]))
    net.apply(tag.subscribe("B", [1]))
    dave = {
        "pets": [row(1, "rex", owner=4)],
        "tags": [row(1, "red")],
        **row(4, "dave"),
    }
    net.apply(bp.after_create(user, dave, requester="A", former_parents={"pets": {1: 1}}))
    assert net.take("A") == []
    assert net.take("B") == [
        'pet {"verb":"updated","data":{"owner":4},"id":1}',
        'tag {"id":1,"verb":"addedTo","attribute":"users","addedId":4}',
        'user {"verb":"created","data":' + orjson.dumps(dave).decode() + ',"id":4}',
        'user {"id":1,"verb":"removedFrom","attribute":"pets","removedId":1}',
    ]
    assert "sails_model_user_4:user" in net.rooms["A"]  # the requester is subscribed
    assert "sails_model_user_4:user" in net.rooms["B"]  # the watcher is introduced


def test_add_tells_the_former_parent_unless_it_is_the_same_parent(reg: ModelRegistry) -> None:
    user, pet, _ = planners(reg)
    net = Rooms("A", "B").apply(user.subscribe("B", [2, 3]) + pet.subscribe("B", [2]))
    net.apply(bp.after_add(user, 2, "pets", 2, requester="A", former_parent=3))  # rps.19
    assert net.take("B") == [
        'user {"id":2,"verb":"addedTo","attribute":"pets","addedId":2}',
        'pet {"verb":"updated","data":{"owner":2},"id":2}',
        'user {"id":3,"verb":"removedFrom","attribute":"pets","removedId":2}',
    ]
    net.apply(bp.after_add(user, "2", "pets", "2", requester="A", former_parent="2"))  # rps.20
    assert net.take("B") == [
        'user {"id":2,"verb":"addedTo","attribute":"pets","addedId":2}',
        'pet {"verb":"updated","data":{"owner":2},"id":2}',
    ]
    assert net.take("A") == []
    assert {"sails_model_user_2:user", "sails_model_pet_2:pet"} <= net.rooms["A"]


def test_many_to_many_add_remove_on_both_sides(reg: ModelRegistry) -> None:
    user, _, tag = planners(reg)
    net = Rooms("A", "B").apply(user.subscribe("B", [1, 2]) + tag.subscribe("B", [1]))
    net.apply(bp.after_add(tag, 2, "users", 2, requester="A"))  # rps.25
    assert net.take("B") == ['user {"id":2,"verb":"addedTo","attribute":"tags","addedId":2}']
    net.apply(bp.after_remove(user, 1, "tags", 1, requester="A"))  # rps.26
    assert net.take("B") == [
        'user {"id":1,"verb":"removedFrom","attribute":"tags","removedId":1}',
        'tag {"id":1,"verb":"removedFrom","attribute":"users","removedId":1}',
    ]
    with pytest.raises(UsageError, match="former parent"):
        bp.after_add(user, 1, "tags", 1, former_parent=2)


def test_update_of_a_collection_tells_the_other_side(reg: ModelRegistry) -> None:
    """rps.27 done right: Sails tells nobody; we diff `previous` against the values set."""
    user, _, tag = planners(reg)
    net = Rooms("A", "B").apply(user.subscribe("B", [1]) + tag.subscribe("B", [1, 2, 3]))
    previous = {"pets": [], "tags": [row(3, "green")], **row(1, "alice")}
    values = {"tags": [1, {"id": 2}], "id": 1, "updatedAt": TS}
    net.apply(bp.after_update(user, "1", values, previous=previous, requester="A"))
    assert net.take("B") == [
        'tag {"id":3,"verb":"removedFrom","attribute":"users","removedId":1}',
        'tag {"id":1,"verb":"addedTo","attribute":"users","addedId":1}',
        'tag {"id":2,"verb":"addedTo","attribute":"users","addedId":1}',
        'user {"verb":"updated","data":{"tags":[1,{"id":2}],"id":1,"updatedAt":"<ts>"},"id":1,'
        '"previous":' + orjson.dumps(previous).decode() + "}",
    ]


def test_update_of_a_to_one_and_pets_set_through_update(reg: ModelRegistry) -> None:
    user, pet, _ = planners(reg)
    net = Rooms("A", "B").apply(user.subscribe("B", [2, 3, 4]) + pet.subscribe("B", [1, 5]))
    previous = row(1, "rex", owner=row(4, "dave"))
    net.apply(bp.after_update(pet, 1, {"owner": 3}, previous=previous, requester="A"))  # rps.22
    assert net.take("B") == [
        'user {"id":4,"verb":"removedFrom","attribute":"pets","removedId":1}',
        'user {"id":3,"verb":"addedTo","attribute":"pets","addedId":1}',
        'pet {"verb":"updated","data":{"owner":3},"id":1,"previous":'
        + orjson.dumps(previous).decode()
        + "}",
    ]
    # same owner: no reverse notice
    net.apply(bp.after_update(pet, 1, {"owner": {"id": 3}}, previous=row(1, "rex", owner=3)))
    assert net.take("B") == [
        'pet {"verb":"updated","data":{"owner":{"id":3}},"id":1,"previous":'
        + orjson.dumps(row(1, "rex", owner=3)).decode()
        + "}"
    ]
    # a pet moved in through user.pets: its new parent's reverse and the former parent
    previous = {"pets": [], "tags": [], **row(3, "carol")}
    net.apply(
        bp.after_update(user, 3, {"pets": [5]}, previous=previous, former_parents={"pets": {5: 2}})
    )
    assert net.take("B") == [
        'pet {"verb":"updated","data":{"owner":3},"id":5}',
        'user {"verb":"updated","data":{"pets":[5]},"id":3,"previous":'
        + orjson.dumps(previous).decode()
        + "}",
        'user {"id":2,"verb":"removedFrom","attribute":"pets","removedId":5}',
    ]


def test_destroy_order_and_room_retirement(reg: ModelRegistry) -> None:
    user, pet, tag = planners(reg)
    net = Rooms("A", "B", "C").apply(
        user.watch("B")
        + user.subscribe("A", [4])
        + user.subscribe("C", [4])  # neither watcher nor requester
        + pet.subscribe("B", [2])
        + tag.subscribe("B", [1])
    )
    net.apply(user.introduce(4))
    dave = {"pets": [row(2, "tom", owner=4)], "tags": [row(1, "red")], **row(4, "dave")}
    net.apply(bp.after_destroy(user, dave, requester="A"))  # rps.33
    destroyed = 'user {"verb":"destroyed","id":4,"previous":' + orjson.dumps(dave).decode() + "}"
    assert net.take("B") == [
        destroyed,
        'pet {"verb":"updated","data":{"owner":null},"id":2}',
        'tag {"id":1,"verb":"removedFrom","attribute":"users","removedId":4}',
    ]
    assert net.take("C") == [destroyed]
    # rps.34, and C too (Sails' retire would leave C in the dead record's room)
    assert not [s for s, rooms in net.rooms.items() if "sails_model_user_4:user" in rooms]
    net.apply(user.publish([4], {"verb": "probe"}))
    assert net.take("A") == net.take("B") == net.take("C") == []


def test_replace_adds_steals_and_removes_in_order(reg: ModelRegistry) -> None:
    user, pet, _ = planners(reg)
    net = Rooms("A", "B").apply(user.subscribe("B", [2, 3]) + pet.subscribe("B", [1, 3, 7]))
    net.apply(
        bp.after_replace(
            user,
            3,
            "pets",
            [1, "3"],
            previous=[7, 1],
            requester="A",
            former_parents={3: 2, 1: 3},
        )
    )
    assert net.take("B") == [
        'user {"id":3,"verb":"addedTo","attribute":"pets","addedId":3}',
        'pet {"verb":"updated","data":{"owner":3},"id":3}',
        'user {"id":2,"verb":"removedFrom","attribute":"pets","removedId":3}',
        'user {"id":3,"verb":"removedFrom","attribute":"pets","removedId":7}',
        'pet {"verb":"updated","data":{"owner":null},"id":7}',
    ]
    assert {"sails_model_user_3:user", "sails_model_pet_3:pet"} <= net.rooms["A"]
    assert "sails_model_pet_1:pet" not in net.rooms["A"]  # not newly added
    with pytest.raises(UsageError, match="not in the collection"):
        bp.after_replace(user, 3, "pets", [1], previous=[], former_parents={9: 2})


def test_mirror_and_server_side_actions(reg: ModelRegistry) -> None:
    user, _, _ = planners(reg)
    net = Rooms("A").apply(user.watch("A"))
    net.apply(bp.after_create(user, {"id": 5, "name": "erin"}, requester="A", mirror=True))
    assert net.take("A") == ['user {"verb":"created","data":{"id":5,"name":"erin"},"id":5}']
    steps = bp.after_update(user, 5, {"name": "e"}, previous={"id": 5})
    assert not any(isinstance(s, Join) for s in steps)  # no requester: nobody subscribed
    net.apply(steps)
    assert net.take("A") == [
        'user {"verb":"updated","data":{"name":"e"},"id":5,"previous":{"id":5}}'
    ]
    # a blueprint's requester that has gone is skipped, not an error
    assert all(
        s.if_connected
        for s in steps + bp.after_add(user, 5, "pets", 1, requester="X")
        if isinstance(s, Join)
    )


def test_one_to_one_and_one_way_collections() -> None:
    r = ModelRegistry()
    r.define("person", {"passport": to_one("passport", via="holder"), "hats": to_many("hat")})
    r.define("passport", {"holder": to_one("person", via="passport")})
    person = Planner(r, "person")
    net = Rooms("B").apply(
        Planner(r, "passport").subscribe("B", [7, 8]) + Planner(r, "hat").subscribe("B", [1])
    )
    net.apply(bp.after_update(person, 1, {"passport": 8}, previous={"id": 1, "passport": 7}))
    assert net.take("B") == [
        'passport {"verb":"updated","data":{"holder":null},"id":7}',
        'passport {"verb":"updated","data":{"holder":1},"id":8}',
    ]
    net.apply(bp.after_add(person, 1, "hats", 1))  # no via: nothing on the hat's side
    assert net.take("B") == []


class FakeSockets:
    """Stands in for `pub.sockets`: records broadcasts; `gone` sockets fail to join."""

    def __init__(self, gone: dict[str, Exception]) -> None:
        self.gone = gone
        self.sent: list[tuple[list[str], str, object, list[str]]] = []

    async def broadcast(
        self,
        rooms: list[str],
        event: str,
        data: object,
        *,
        omit: list[str],
        msg_id: str | None = None,
    ) -> None:
        self.sent.append((rooms, event, data, omit))

    async def join(self, sid: str, rooms: list[str]) -> None:
        if sid in self.gone:
            raise self.gone[sid]

    async def add_room_members_to_rooms(self, src: str, dst: list[str]) -> None:
        pass


async def test_a_vanished_requester_does_not_stop_the_notices(reg: ModelRegistry) -> None:
    failure = NoSuchSocket("X")
    sockets = FakeSockets({"X": failure})
    pub = SimpleNamespace(sockets=sockets)
    user = Model(pub, "user", registry=reg)
    await user.after_create({"id": 9, "name": "x"}, requester="X")
    assert sockets.sent == [
        (
            ["sails_model_create_user"],
            "user",
            {"verb": "created", "data": {"id": 9, "name": "x"}, "id": 9},
            ["X"],
        )
    ]
    with pytest.raises(NoSuchSocket):
        await user.subscribe("X", [9])  # a direct call still reports it


async def test_a_gateway_that_does_not_answer_is_an_error(reg: ModelRegistry) -> None:
    """Only a gone requester is skipped (the gateway answers "no such socket" even while
    it disconnects); silence from a gateway is a real failure and is raised."""
    sockets = FakeSockets({"X": GatewayTimeout("no answer")})
    user = Model(SimpleNamespace(sockets=sockets), "user", registry=reg)
    with pytest.raises(GatewayTimeout):
        await user.after_create({"id": 9, "name": "x"}, requester="X")
