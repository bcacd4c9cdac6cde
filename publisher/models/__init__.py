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
`publisher.models.planner` and `publisher.blueprints`), then runs the steps in order:
a broadcast is published, a membership change is awaited until every gateway
concerned applied it. Message shapes and key order are those a Sails 1.5 app puts on
the wire. Where we differ from Sails, on purpose: docs/sails-compat.md.

One concept per module: `ids` (coercion), `registry` (`define`, `to_one`, `to_many`),
`steps` (the step algebra), `planner` (Sails' pubsub hook, pure), `model` (the async
facade, generated from the planner).
"""

from publisher.models.ids import Id, IdOrRecord, IdsLike, PkType, Record, coerce_id
from publisher.models.model import Model
from publisher.models.planner import Planner
from publisher.models.registry import (
    V1_CONTEXTS,
    Association,
    ModelRegistry,
    ModelSpec,
    default_registry,
    define,
    to_many,
    to_one,
)
from publisher.models.steps import AddMembers, Emit, Join, Leave, RemoveMembers, Step, merge

__all__ = [
    "V1_CONTEXTS",
    "AddMembers",
    "Association",
    "Emit",
    "Id",
    "IdOrRecord",
    "IdsLike",
    "Join",
    "Leave",
    "Model",
    "ModelRegistry",
    "ModelSpec",
    "PkType",
    "Planner",
    "Record",
    "RemoveMembers",
    "Step",
    "coerce_id",
    "default_registry",
    "define",
    "merge",
    "to_many",
    "to_one",
]
