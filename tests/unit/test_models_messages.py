"""Resourceful pub/sub message building, without I/O: room names, id coercion, the
payload of every verb in the key order a Sails 1.5.18 app sends (compared as JSON
bytes with the recording), 0.12 contexts, and the model registry."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

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
    coerce_id,
    merge,
    to_many,
    to_one,
)
from shared.errors import UsageError
from tests.support.rps_steps import FULL

TS = "<ts>"


@pytest.fixture
def reg() -> ModelRegistry:
    r = ModelRegistry()
    r.define("user", {"pets": to_many("pet", via="owner"), "tags": to_many("tag", via="users")})
    r.define("pet", {"owner": to_one("user")})
    r.define("tag", {"users": to_many("user", via="tags")})
    return r


def wire(steps: list[Step]) -> list[str]:
    """The broadcasts of a plan as `event <JSON>`, the transcript's notation."""
    return [f"{s.event} {orjson.dumps(s.payload).decode()}" for s in steps if isinstance(s, Emit)]


def rooms(steps: list[Step]) -> list[tuple[str, ...]]:
    return [s.rooms for s in steps if isinstance(s, Emit)]


# -- names and ids ---------------------------------------------------------------------------
def test_room_names_and_identity_are_sails_ones(reg: ModelRegistry) -> None:
    p = Planner(reg, "User")
    assert p.identity == "user"
    assert p.get_room_name(7) == "sails_model_user_7:user"
    assert p.get_room_name("7") == "sails_model_user_7:user"
    assert p.get_room_name({"id": 7, "name": "x"}) == "sails_model_user_7:user"
    assert p.get_room_name(7.0) == "sails_model_user_7:user"  # type: ignore[arg-type]  # integral floats are accepted
    assert p.class_room == "sails_model_create_user"
    assert p.room(7, "update") == "sails_model_user_7:user"  # v1: one room per record


@pytest.mark.parametrize("bad", [None, "", True, 1.5, [], {"name": "no id"}])
def test_bad_ids_raise_at_once(reg: ModelRegistry, bad: Any) -> None:
    with pytest.raises(UsageError):
        Planner(reg, "user").get_room_name(bad)


@pytest.mark.parametrize("bad", ["", "user.x", "a b", 3])
def test_bad_identity_raises(bad: Any) -> None:
    with pytest.raises(UsageError):
        Planner(ModelRegistry(), bad)


def test_ids_are_coerced_to_the_primary_key_type() -> None:
    assert coerce_id("3", "number") == 3
    assert coerce_id(" 3 ", "number") == 3
    assert coerce_id(3.0, "number") == 3
    assert coerce_id(3, "string") == "3"
    assert coerce_id("5f2a", "string") == "5f2a"
    with pytest.raises(UsageError, match="not a number"):
        coerce_id("abc", "number")  # Sails: parseInt → NaN → null on the wire
    with pytest.raises(UsageError):
        coerce_id(False, "number")


def test_payload_ids_follow_the_primary_key_type_of_each_model() -> None:
    r = ModelRegistry()
    r.define("doc", {"tags": to_many("label")}, pk_type="string")
    r.define("label", pk_type="number")
    doc = Planner(r, "doc")
    assert wire(doc.publish_update(12, {"a": 1})) == [
        'doc {"verb":"updated","data":{"a":1},"id":"12"}'
    ]
    assert wire(doc.publish_add(12, "tags", "4")) == [
        'doc {"id":"12","verb":"addedTo","attribute":"tags","addedId":4}'
    ]


# -- payloads, byte for byte ----------------------------------------------------------------
def test_updated_with_previous_is_the_recorded_rps17(reg: ModelRegistry) -> None:
    previous = {"pets": [], "tags": [], "createdAt": TS, "updatedAt": TS, "id": 3, "name": "carol"}
    steps = Planner(reg, "user").publish_update(
        "3", {"name": "caroline", "id": 3, "updatedAt": TS}, previous=previous, omit="A"
    )
    assert wire(steps) == list(FULL["17"]["B"])
    assert rooms(steps) == [("sails_model_user_3:user",)]
    assert steps[-1].omit == ("A",)  # type: ignore[union-attr]


def test_reverse_updated_has_no_previous_key(reg: ModelRegistry) -> None:
    assert wire(Planner(reg, "pet").publish_update(2, {"owner": None})) == [
        'pet {"verb":"updated","data":{"owner":null},"id":2}'
    ]


def test_destroyed_created_added_removed_shapes(reg: ModelRegistry) -> None:
    kitty = {
        "createdAt": TS,
        "updatedAt": TS,
        "id": 4,
        "name": "kitty",
        "owner": {"createdAt": TS, "updatedAt": TS, "id": 1, "name": "alice"},
    }
    pet = Planner(reg, "pet")
    assert wire(pet.publish_create(kitty, reverse=False)) == list(FULL["30"]["B"][1:])
    assert wire(pet.publish_destroy(4, previous=kitty, reverse=False)) == list(FULL["31"]["B"][:1])
    assert wire(pet.publish_destroy(4)) == ['pet {"verb":"destroyed","id":4}']
    user = Planner(reg, "user")
    assert wire(user.publish_add("3", "pets", "2", reverse=False)) == list(FULL["18"]["B"][:1])
    assert wire(user.publish_remove(2, "pets", 2, reverse=False)) == list(FULL["21"]["B"][:1])


def test_added_record_is_appended_when_a_record_is_given(reg: ModelRegistry) -> None:
    steps = Planner(reg, "user").publish_add(3, "pets", {"id": 2, "name": "tom"}, reverse=False)
    assert wire(steps) == [
        'user {"id":3,"verb":"addedTo","attribute":"pets","addedId":2,'
        '"added":{"id":2,"name":"tom"}}'
    ]


def test_created_id_is_sent_as_stored_and_several_records_give_several_messages(
    reg: ModelRegistry,
) -> None:
    steps = Planner(reg, "tag").publish_create([{"id": 1, "name": "red"}, {"id": "2", "name": "b"}])
    assert wire(steps) == [
        'tag {"verb":"created","data":{"id":1,"name":"red"},"id":1}',
        'tag {"verb":"created","data":{"id":"2","name":"b"},"id":"2"}',
    ]
    assert [s for s in steps if isinstance(s, AddMembers)] == [
        AddMembers("sails_model_create_tag", ("sails_model_tag_1:tag",)),
        AddMembers("sails_model_create_tag", ("sails_model_tag_2:tag",)),
    ]
    with pytest.raises(UsageError, match="'id'"):
        Planner(reg, "tag").publish_create({"name": "no id"})


def test_publish_sends_data_as_is_and_message_wraps_it(reg: ModelRegistry) -> None:
    user = Planner(reg, "user")
    steps = user.publish([1, "2", {"id": 3}], {"verb": "custom", "hello": 1}, omit=["A", "B"])
    assert steps == [
        Emit(
            ("sails_model_user_1:user", "sails_model_user_2:user", "sails_model_user_3:user"),
            "user",
            {"verb": "custom", "hello": 1},
            ("A", "B"),
        )
    ]
    assert user.publish([], {"x": 1}) == []
    assert wire(user.message("9", {"text": "hi"})) == [
        'user {"verb":"messaged","id":9,"data":{"text":"hi"}}'
    ]


def test_subscribe_watch_introduce_retire_steps(reg: ModelRegistry) -> None:
    user = Planner(reg, "user")
    assert user.subscribe("S", [1, {"id": 2}, 1]) == [
        Join("S", ("sails_model_user_1:user", "sails_model_user_2:user"))
    ]
    assert user.unsubscribe("S", 1) == [Leave("S", ("sails_model_user_1:user",))]
    assert user.watch("S") == [Join("S", ("sails_model_create_user",))]
    assert user.unwatch("S") == [Leave("S", ("sails_model_create_user",))]
    assert user.introduce(5) == [
        AddMembers("sails_model_create_user", ("sails_model_user_5:user",))
    ]
    assert user.retire({"id": 5}) == [
        RemoveMembers("sails_model_create_user", ("sails_model_user_5:user",))
    ]
    with pytest.raises(UsageError):
        user.subscribe("", [1])
    with pytest.raises(UsageError, match="contexts=True"):
        user.subscribe("S", [1], contexts=["update"])


# -- Sails 0.12 contexts ------------------------------------------------------------------
def test_legacy_context_rooms() -> None:
    r = ModelRegistry()
    r.define("post", {"comments": to_many("comment", via="post")}, contexts=True)
    r.define("comment", {"post": to_one("post")}, contexts=True, autosubscribe=["update"])
    post = Planner(r, "post")
    assert post.contexts() == (
        "update",
        "destroy",
        "message",
        "add:comments",
        "remove:comments",
    )
    assert post.get_room_name(1) == "sails_model_post_1:post"
    assert post.subscribe("S", [1], ["message"]) == [Join("S", ("sails_model_post_1:message",))]
    assert post.subscribe("S", [1])[0].rooms == tuple(
        f"sails_model_post_1:{c}" for c in post.contexts()
    )
    assert rooms(post.publish_update(1, {"t": 1}, reverse=False)) == [
        ("sails_model_post_1:update",)
    ]
    assert rooms(post.publish_destroy(1)) == [("sails_model_post_1:destroy",)]
    assert rooms(post.message(1, {})) == [("sails_model_post_1:message",)]
    assert rooms(post.publish([1, 2], {})) == [
        ("sails_model_post_1:message", "sails_model_post_2:message")
    ]
    assert rooms(post.publish_add(1, "comments", 9)) == [
        ("sails_model_post_1:add:comments",),
        ("sails_model_comment_9:update",),
    ]
    assert rooms(post.publish_remove(1, "comments", 9, reverse=False)) == [
        ("sails_model_post_1:remove:comments",)
    ]
    comment = Planner(r, "comment")
    assert comment.introduce(9) == [
        AddMembers("sails_model_create_comment", ("sails_model_comment_9:update",))
    ]
    assert comment.retire(9)[0].rooms == tuple(
        f"sails_model_comment_9:{c}" for c in ("update", "destroy", "message")
    )
    with pytest.raises(UsageError, match="contexts"):
        comment.room(9)
    r.define("quiet", contexts=True, autosubscribe=[])  # 0.12 autosubscribe: false
    assert Planner(r, "quiet").subscribe("S", [1]) == Planner(r, "quiet").introduce(1) == []


# -- merge ----------------------------------------------------------------------------------
def test_merge_folds_neighbouring_membership_steps_only() -> None:
    e = Emit(("r",), "x", 1)
    steps: list[Step] = [
        Join("S", ("a",), True),
        Join("S", ("b", "a"), True),
        Join("T", ("a",), True),
        Join("T", ("c",)),
        e,
        Join("T", ("d",)),
        AddMembers("cls", ("1",)),
        AddMembers("cls", ("2",)),
        RemoveMembers("cls", ("1",)),
        Leave("S", ("a",)),
        Leave("S", ("b",)),
    ]
    assert merge(steps) == [
        Join("S", ("a", "b"), True),
        Join("T", ("a",), True),
        Join("T", ("c",)),
        e,
        Join("T", ("d",)),
        AddMembers("cls", ("1", "2")),
        RemoveMembers("cls", ("1",)),
        Leave("S", ("a", "b")),
    ]


# -- the registry --------------------------------------------------------------------------
def test_define_is_idempotent_but_refuses_a_different_declaration() -> None:
    r = ModelRegistry()
    spec = r.define("User", {"pets": to_many("Pet", via="owner")})
    assert spec.identity == "user"
    assert spec.associations["pets"].model == "pet"
    assert r.define("user", {"pets": to_many("pet", via="owner")}) == spec
    with pytest.raises(UsageError, match="already defined"):
        r.define("user", {"pets": to_many("pet")})
    with pytest.raises(UsageError, match="autosubscribe"):
        r.define("x", autosubscribe=["update"])
    with pytest.raises(UsageError, match="to_one"):
        r.define("y", {"a": "pet"})  # type: ignore[dict-item]
    with pytest.raises(UsageError, match="pk_type"):
        r.define("z", pk_type="uuid")  # type: ignore[arg-type]


def test_declared_models_check_attributes_undeclared_ones_do_not(reg: ModelRegistry) -> None:
    with pytest.raises(UsageError, match="no association 'toys'"):
        Planner(reg, "user").publish_add(1, "toys", 2)
    with pytest.raises(UsageError, match="to-one"):
        Planner(reg, "pet").publish_add(1, "owner", 2)
    loose = Planner(reg, "cat")  # never declared: no associations, taken as given
    assert wire(loose.publish_add(1, "toys", "ball-7")) == [
        'cat {"id":1,"verb":"addedTo","attribute":"toys","addedId":"ball-7"}'
    ]


def test_planner_is_what_a_model_uses(reg: ModelRegistry) -> None:
    user = Model(SimpleNamespace(), "USER", registry=reg)
    assert isinstance(user.plan, Planner)
    assert user.plan.spec == Planner(reg, "user").spec == reg.spec("user")
    # every verb of the facade is generated from its planner method or blueprint action:
    # the same parameters (after the planner) and the same documentation
    sources: list[tuple[str, Callable[..., object]]] = [
        ("publish_update", Planner.publish_update),
        ("watch", Planner.watch),
    ]
    for name, source in sources:
        method = getattr(Model, name)
        assert inspect.iscoroutinefunction(method)
        assert method.__doc__ == source.__doc__
        planned = list(inspect.signature(source).parameters.values())[1:]
        assert list(inspect.signature(method).parameters.values())[1:] == planned
    assert Model.after_update.__doc__ == bp.after_update.__doc__
    assert Model.after_populate is Model.after_find_one
