# ruff: noqa: E501  (verbatim recorded payloads)
"""The recorded scenario `rps` of ../shared/reference/sails-transcripts.md: what the
sockets A (actor), B (watcher/subscriber) and C (bystander) of a real Sails 1.5.18 app
received, step by step. Generated from the transcript and kept verbatim; ids of
sockets are `<self>`, timestamps `<ts>`.

`STEPS`: the per-step table (events abbreviated the way the transcript abbreviates them:
`event:verb {payload without verb, data as "{keys}", previous as "{…}"}`).
`FULL`: the complete payloads the transcript records for a step (sections 3, 4 and 7),
as `event <JSON>` in wire key order, per socket. Steps 39/40 send the request's `data`
as-is (section 4), so their payloads are those of the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Recorded:
    actor: str
    request: str
    note: str
    A: tuple[str, ...] = ()
    B: tuple[str, ...] = ()
    C: tuple[str, ...] = ()
    rooms: tuple[str, ...] | None = None
    """The actor's rooms, for the introspection steps (`GET /room/rooms`)."""


STEPS: Final[dict[str, Recorded]] = {
    "01": Recorded(
        "A",
        'POST /user {"name":"alice"}',
        "setup: A creates user alice (nobody watching yet)",
    ),
    "02": Recorded(
        "A",
        'POST /user {"name":"bob"}',
        "setup: A creates user bob",
    ),
    "03": Recorded(
        "A",
        'POST /pet {"name":"rex","owner":1}',
        "setup: A creates pet rex owned by alice",
    ),
    "04": Recorded(
        "A",
        'POST /pet {"name":"tom"}',
        "setup: A creates pet tom (no owner)",
    ),
    "05": Recorded(
        "A",
        'POST /pet {"name":"fido","owner":2}',
        "setup: A creates pet fido owned by bob",
    ),
    "06": Recorded(
        "A",
        'POST /tag {"name":"red"}',
        "setup: A creates tag red",
    ),
    "07": Recorded(
        "A",
        'POST /tag {"name":"blue"}',
        "setup: A creates tag blue",
    ),
    "08": Recorded(
        "B",
        "GET /user",
        "B finds all users: subscribes to each returned user, watches `user`, and (subscribeDeep) watches `pet` + `tag` and subscribes to populated pets",
    ),
    "09": Recorded(
        "B",
        "GET /user/1",
        "B finds one user (alice)",
    ),
    "10": Recorded(
        "B",
        "GET /pet/2",
        "B finds one pet (tom)",
    ),
    "11": Recorded(
        "B",
        "GET /tag/1",
        "B finds one tag (red)",
    ),
    "12": Recorded(
        "A",
        "GET /room/rooms",
        "introspection: rooms of A",
        rooms=(
            "<self>",
            "sails_model_pet_1:pet",
            "sails_model_pet_2:pet",
            "sails_model_pet_3:pet",
            "sails_model_tag_1:tag",
            "sails_model_tag_2:tag",
            "sails_model_user_1:user",
            "sails_model_user_2:user",
        ),
    ),
    "13": Recorded(
        "B",
        "GET /room/rooms",
        "introspection: rooms of B",
        rooms=(
            "<self>",
            "sails_model_create_pet",
            "sails_model_create_tag",
            "sails_model_create_user",
            "sails_model_pet_1:pet",
            "sails_model_pet_2:pet",
            "sails_model_pet_3:pet",
            "sails_model_tag_1:tag",
            "sails_model_user_1:user",
            "sails_model_user_2:user",
        ),
    ),
    "14": Recorded(
        "C",
        "GET /room/rooms",
        "introspection: rooms of C",
        rooms=("<self>",),
    ),
    "15": Recorded(
        "A",
        'POST /user {"name":"carol"}',
        "A creates user carol: `created` to watchers of `user` (B), A omitted",
        B=('user:created {"data":"{pets,tags,createdAt,updatedAt,id,name}","id":3}',),
    ),
    "16": Recorded(
        "A",
        'POST /user {"name":"dave","pets":[1],"tags":[1]}',
        "A creates user dave with pets:[rex] (rex was alice's) and tags:[red]: reverse messages + `created` with populated associations + removedFrom to former parent",
        B=(
            'pet:updated {"data":"{owner}","id":1}',
            'tag:addedTo {"id":1,"attribute":"users","addedId":4}',
            'user:created {"data":"{pets,tags,createdAt,updatedAt,id,name}","id":4}',
            'user:removedFrom {"id":1,"attribute":"pets","removedId":1}',
        ),
    ),
    "17": Recorded(
        "A",
        'PATCH /user/3 {"name":"caroline"}',
        "A updates carol's name: `updated` with `previous`",
        B=('user:updated {"data":"{name,id,updatedAt}","id":3,"previous":"{…}"}',),
    ),
    "18": Recorded(
        "A",
        "PUT /user/3/pets/2",
        "A adds pet tom to carol.pets: `addedTo` (+ reverse `updated {owner}` on the pet)",
        B=(
            'user:addedTo {"id":3,"attribute":"pets","addedId":2}',
            'pet:updated {"data":"{owner}","id":2}',
        ),
    ),
    "19": Recorded(
        "A",
        "PUT /user/2/pets/2",
        "A adds tom to bob.pets (steals tom from carol): `addedTo` bob, reverse pet `updated`, `removedFrom` carol",
        B=(
            'user:addedTo {"id":2,"attribute":"pets","addedId":2}',
            'pet:updated {"data":"{owner}","id":2}',
            'user:removedFrom {"id":3,"attribute":"pets","removedId":2}',
        ),
    ),
    "20": Recorded(
        "A",
        "PUT /user/2/pets/2",
        "A adds tom to bob.pets again (already bob's)",
        B=(
            'user:addedTo {"id":2,"attribute":"pets","addedId":2}',
            'pet:updated {"data":"{owner}","id":2}',
            'user:removedFrom {"id":2,"attribute":"pets","removedId":2}',
        ),
    ),
    "21": Recorded(
        "A",
        "DELETE /user/2/pets/2",
        "A removes tom from bob.pets: `removedFrom` (+ reverse `updated {owner:null}`)",
        B=(
            'user:removedFrom {"id":2,"attribute":"pets","removedId":2}',
            'pet:updated {"data":"{owner}","id":2}',
        ),
    ),
    "22": Recorded(
        "A",
        'PATCH /pet/1 {"owner":3}',
        "A sets rex.owner = carol (was dave): pet `updated`, reverse user `removedFrom` dave + `addedTo` carol",
        B=(
            'user:removedFrom {"id":4,"attribute":"pets","removedId":1}',
            'user:addedTo {"id":3,"attribute":"pets","addedId":1}',
            'pet:updated {"data":"{owner,id,updatedAt}","id":1,"previous":"{…}"}',
        ),
    ),
    "23": Recorded(
        "A",
        'PATCH /pet/1 {"owner":null}',
        "A sets rex.owner = null: pet `updated`, reverse user `removedFrom` carol",
        B=(
            'user:removedFrom {"id":3,"attribute":"pets","removedId":1}',
            'pet:updated {"data":"{owner,id,updatedAt}","id":1,"previous":"{…}"}',
        ),
    ),
    "24": Recorded(
        "A",
        "PUT /user/1/tags/1",
        "A adds tag red to alice.tags (many-to-many): `addedTo` on both sides",
        B=(
            'user:addedTo {"id":1,"attribute":"tags","addedId":1}',
            'tag:addedTo {"id":1,"attribute":"users","addedId":1}',
        ),
    ),
    "25": Recorded(
        "A",
        "PUT /tag/2/users/2",
        "A adds user bob to tag blue.users (other side of the many-to-many)",
        B=('user:addedTo {"id":2,"attribute":"tags","addedId":2}',),
    ),
    "26": Recorded(
        "A",
        "DELETE /user/1/tags/1",
        "A removes tag red from alice.tags: `removedFrom` on both sides",
        B=(
            'user:removedFrom {"id":1,"attribute":"tags","removedId":1}',
            'tag:removedFrom {"id":1,"attribute":"users","removedId":1}',
        ),
    ),
    "27": Recorded(
        "A",
        'PATCH /user/1 {"tags":[1,2]}',
        "A updates alice with tags:[red, blue] (collection set through update)",
        B=('user:updated {"data":"{id,updatedAt}","id":1,"previous":"{…}"}',),
    ),
    "28": Recorded(
        "A",
        "PUT /user/1/tags [2]",
        "A replaces alice.tags with [blue] (replace blueprint)",
        B=(
            'user:removedFrom {"id":1,"attribute":"tags","removedId":1}',
            'tag:removedFrom {"id":1,"attribute":"users","removedId":1}',
        ),
    ),
    "29": Recorded(
        "A",
        "PUT /user/3/pets [1,3]",
        "A replaces carol.pets with [rex, fido] (carol has no pets; rex is unowned, fido is bob's): one `addedTo` per child + `removedFrom` to bob",
        B=(
            'user:addedTo {"id":3,"attribute":"pets","addedId":1}',
            'pet:updated {"data":"{owner}","id":1}',
            'user:addedTo {"id":3,"attribute":"pets","addedId":3}',
            'pet:updated {"data":"{owner}","id":3}',
            'user:removedFrom {"id":2,"attribute":"pets","removedId":3}',
        ),
    ),
    "30": Recorded(
        "A",
        'POST /pet {"name":"kitty","owner":1}',
        "A creates pet kitty owned by alice: pet `created` to pet watchers + reverse user `addedTo` alice",
        B=(
            'user:addedTo {"id":1,"attribute":"pets","addedId":4}',
            'pet:created {"data":"{createdAt,updatedAt,id,name,owner}","id":4}',
        ),
    ),
    "31": Recorded(
        "A",
        "DELETE /pet/4",
        "A destroys pet kitty: `destroyed` with `previous`, reverse user `removedFrom` alice",
        B=(
            'pet:destroyed {"id":4,"previous":"{…}"}',
            'user:removedFrom {"id":1,"attribute":"pets","removedId":4}',
        ),
    ),
    "32": Recorded(
        "A",
        "PUT /user/4/pets/2",
        "A gives tom to dave (so dave has a pet before being destroyed)",
        B=(
            'user:addedTo {"id":4,"attribute":"pets","addedId":2}',
            'pet:updated {"data":"{owner}","id":2}',
        ),
    ),
    "33": Recorded(
        "A",
        "DELETE /user/4",
        "A destroys user dave (has pets:[tom], tags:[red]): `destroyed` + reverse pet `updated {owner:null}` + tag `removedFrom`",
        B=(
            'user:destroyed {"id":4,"previous":"{…}"}',
            'pet:updated {"data":"{owner}","id":2}',
            'tag:removedFrom {"id":1,"attribute":"users","removedId":4}',
        ),
    ),
    "34": Recorded(
        "A",
        'POST /room/publish {"model":"user","ids":[4],"data":{"verb":"probe","after":"destroy"}}',
        "Who is still in the destroyed user's room? (User.publish([dave]) without omit)",
    ),
    "35": Recorded(
        "B",
        'PATCH /user/1 {"name":"alice2"}',
        "B updates alice: A (subscribed since it created alice) gets `updated`, B (requester) omitted",
        A=('user:updated {"data":"{name,id,updatedAt}","id":1,"previous":"{…}"}',),
    ),
    "36": Recorded(
        "A",
        "GET /user",
        "A finds all users: A now watches `user` too",
    ),
    "37": Recorded(
        "A",
        'POST /user {"name":"erin"}',
        "A (a watcher now) creates user erin: B gets `created`, A (requester, also a watcher) omitted",
        B=('user:created {"data":"{pets,tags,createdAt,updatedAt,id,name}","id":5}',),
    ),
    "38": Recorded(
        "B",
        'POST /user {"name":"frank"}',
        "B (watcher) creates user frank: A gets `created`, B omitted",
        A=('user:created {"data":"{pets,tags,createdAt,updatedAt,id,name}","id":6}',),
    ),
    "39": Recorded(
        "A",
        'POST /room/publish {"model":"user","ids":[1],"data":{"verb":"custom","hello":1}}',
        "User.publish([alice], data) (no req): payload sent as-is on event `user`",
        A=('user:custom {"hello":1}',),
        B=('user:custom {"hello":1}',),
    ),
    "40": Recorded(
        "A",
        'POST /room/publish {"model":"user","ids":[1],"data":{"verb":"custom","hello":2},"omitSelf":true}',
        "User.publish([alice], data, req): requester omitted",
        B=('user:custom {"hello":2}',),
    ),
    "41": Recorded(
        "B",
        "GET /room/rooms",
        "introspection: rooms of B at the end",
        rooms=(
            "<self>",
            "sails_model_create_pet",
            "sails_model_create_tag",
            "sails_model_create_user",
            "sails_model_pet_1:pet",
            "sails_model_pet_2:pet",
            "sails_model_pet_3:pet",
            "sails_model_tag_1:tag",
            "sails_model_user_1:user",
            "sails_model_user_2:user",
            "sails_model_user_3:user",
            "sails_model_user_5:user",
            "sails_model_user_6:user",
        ),
    ),
}

FULL: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "16": {
        "B": (
            'pet {"verb":"updated","data":{"owner":4},"id":1}',
            'tag {"id":1,"verb":"addedTo","attribute":"users","addedId":4}',
            'user {"verb":"created","data":{"pets":[{"createdAt":"<ts>","updatedAt":"<ts>","id":1,"name":"rex","owner":4}],"tags":[{"createdAt":"<ts>","updatedAt":"<ts>","id":1,"name":"red"}],"createdAt":"<ts>","updatedAt":"<ts>","id":4,"name":"dave"},"id":4}',
            'user {"id":1,"verb":"removedFrom","attribute":"pets","removedId":1}',
        ),
    },
    "17": {
        "B": (
            'user {"verb":"updated","data":{"name":"caroline","id":3,"updatedAt":"<ts>"},"id":3,"previous":{"pets":[],"tags":[],"createdAt":"<ts>","updatedAt":"<ts>","id":3,"name":"carol"}}',
        ),
    },
    "18": {
        "B": (
            'user {"id":3,"verb":"addedTo","attribute":"pets","addedId":2}',
            'pet {"verb":"updated","data":{"owner":3},"id":2}',
        ),
    },
    "19": {
        "B": (
            'user {"id":2,"verb":"addedTo","attribute":"pets","addedId":2}',
            'pet {"verb":"updated","data":{"owner":2},"id":2}',
            'user {"id":3,"verb":"removedFrom","attribute":"pets","removedId":2}',
        ),
    },
    "20": {
        "B": (
            'user {"id":2,"verb":"addedTo","attribute":"pets","addedId":2}',
            'pet {"verb":"updated","data":{"owner":2},"id":2}',
            'user {"id":2,"verb":"removedFrom","attribute":"pets","removedId":2}',
        ),
    },
    "21": {
        "B": (
            'user {"id":2,"verb":"removedFrom","attribute":"pets","removedId":2}',
            'pet {"verb":"updated","data":{"owner":null},"id":2}',
        ),
    },
    "22": {
        "B": (
            'user {"id":4,"verb":"removedFrom","attribute":"pets","removedId":1}',
            'user {"id":3,"verb":"addedTo","attribute":"pets","addedId":1}',
            'pet {"verb":"updated","data":{"owner":3,"id":1,"updatedAt":"<ts>"},"id":1,"previous":{"createdAt":"<ts>","updatedAt":"<ts>","id":1,"name":"rex","owner":{"createdAt":"<ts>","updatedAt":"<ts>","id":4,"name":"dave"}}}',
        ),
    },
    "23": {
        "B": (
            'user {"id":3,"verb":"removedFrom","attribute":"pets","removedId":1}',
            'pet {"verb":"updated","data":{"owner":null,"id":1,"updatedAt":"<ts>"},"id":1,"previous":{"createdAt":"<ts>","updatedAt":"<ts>","id":1,"name":"rex","owner":{"createdAt":"<ts>","updatedAt":"<ts>","id":3,"name":"caroline"}}}',
        ),
    },
    "24": {
        "B": (
            'user {"id":1,"verb":"addedTo","attribute":"tags","addedId":1}',
            'tag {"id":1,"verb":"addedTo","attribute":"users","addedId":1}',
        ),
    },
    "25": {
        "B": ('user {"id":2,"verb":"addedTo","attribute":"tags","addedId":2}',),
    },
    "26": {
        "B": (
            'user {"id":1,"verb":"removedFrom","attribute":"tags","removedId":1}',
            'tag {"id":1,"verb":"removedFrom","attribute":"users","removedId":1}',
        ),
    },
    "27": {
        "B": (
            'user {"verb":"updated","data":{"id":1,"updatedAt":"<ts>"},"id":1,"previous":{"pets":[],"tags":[],"createdAt":"<ts>","updatedAt":"<ts>","id":1,"name":"alice"}}',
        ),
    },
    "28": {
        "B": (
            'user {"id":1,"verb":"removedFrom","attribute":"tags","removedId":1}',
            'tag {"id":1,"verb":"removedFrom","attribute":"users","removedId":1}',
        ),
    },
    "29": {
        "B": (
            'user {"id":3,"verb":"addedTo","attribute":"pets","addedId":1}',
            'pet {"verb":"updated","data":{"owner":3},"id":1}',
            'user {"id":3,"verb":"addedTo","attribute":"pets","addedId":3}',
            'pet {"verb":"updated","data":{"owner":3},"id":3}',
            'user {"id":2,"verb":"removedFrom","attribute":"pets","removedId":3}',
        ),
    },
    "30": {
        "B": (
            'user {"id":1,"verb":"addedTo","attribute":"pets","addedId":4}',
            'pet {"verb":"created","data":{"createdAt":"<ts>","updatedAt":"<ts>","id":4,"name":"kitty","owner":{"createdAt":"<ts>","updatedAt":"<ts>","id":1,"name":"alice"}},"id":4}',
        ),
    },
    "31": {
        "B": (
            'pet {"verb":"destroyed","id":4,"previous":{"createdAt":"<ts>","updatedAt":"<ts>","id":4,"name":"kitty","owner":{"createdAt":"<ts>","updatedAt":"<ts>","id":1,"name":"alice"}}}',
            'user {"id":1,"verb":"removedFrom","attribute":"pets","removedId":4}',
        ),
    },
    "33": {
        "B": (
            'user {"verb":"destroyed","id":4,"previous":{"pets":[{"createdAt":"<ts>","updatedAt":"<ts>","id":2,"name":"tom","owner":4}],"tags":[{"createdAt":"<ts>","updatedAt":"<ts>","id":1,"name":"red"}],"createdAt":"<ts>","updatedAt":"<ts>","id":4,"name":"dave"}}',
            'pet {"verb":"updated","data":{"owner":null},"id":2}',
            'tag {"id":1,"verb":"removedFrom","attribute":"users","removedId":4}',
        ),
    },
    "39": {
        "A": ('user {"verb":"custom","hello":1}',),
        "B": ('user {"verb":"custom","hello":1}',),
    },
    "40": {
        "B": ('user {"verb":"custom","hello":2}',),
    },
}
