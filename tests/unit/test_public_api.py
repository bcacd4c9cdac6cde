"""The publisher's public API: the exported names (adding one is a deliberate change),
blocking twins that cover every async verb with the same parameters, types mypy sees
without `Any`, and a SyncPublisher that validates at construction but does not connect."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import publisher
from publisher import Model, Publisher, Sockets, SyncModel, SyncPublisher, SyncSockets
from publisher.sync import ConnectOptions
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

EXPORTED = [
    "Allow",
    "ConfigError",
    "ConnectCheck",
    "Connected",
    "Disconnected",
    "FailedPublish",
    "GatewayTimeout",
    "HttpError",
    "InvalidRoomName",
    "InvalidSocketId",
    "LimitExceeded",
    "Model",
    "ModelRegistry",
    "NatsSettings",
    "NoSuchSocket",
    "NotSerializable",
    "PayloadTooLarge",
    "PublishFailed",
    "Publisher",
    "PublisherClosed",
    "Reject",
    "Request",
    "ReservedRoom",
    "Response",
    "Router",
    "SailcastError",
    "Sockets",
    "SyncModel",
    "SyncPublisher",
    "SyncSockets",
    "TransportError",
    "UsageError",
    "define",
    "to_many",
    "to_one",
]


def test_exported_names_are_pinned_and_sorted() -> None:
    assert publisher.__all__ == EXPORTED
    assert sorted(publisher.__all__, key=lambda n: (n[0].islower(), n)) == publisher.__all__
    for name in EXPORTED:
        assert getattr(publisher, name) is not None
    public = {n for n, v in vars(publisher).items() if not n.startswith("_")}
    public -= {m for m, v in vars(publisher).items() if inspect.ismodule(v)}
    assert public == set(EXPORTED), "exported by import but missing from __all__"


def _coroutine_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in inspect.getmembers(cls, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize(("twin", "source"), [(SyncSockets, Sockets), (SyncModel, Model)])
def test_every_async_verb_has_a_blocking_twin_with_its_parameters(twin: type, source: type) -> None:
    verbs = _coroutine_methods(source)
    assert verbs
    for name, signature in verbs.items():
        mirror = getattr(twin, name, None)
        assert mirror is not None, f"{twin.__name__} lacks {name}"
        assert not inspect.iscoroutinefunction(mirror), name
        # the same parameters after `self` (broadcast/blast: those of prepare_*)
        origin = getattr(source, f"prepare_{name}", getattr(source, name))
        expected = list(inspect.signature(origin).parameters)[1:]
        assert list(inspect.signature(mirror).parameters)[1:] == expected, name
        assert list(signature.parameters)[1:] == expected, name


def test_room_names_are_shared_by_model_and_its_twin() -> None:
    sync = SyncPublisher("nats://127.0.0.1:4222", prefix="api")
    user = sync.model("User")
    assert user.class_room == "sails_model_create_user"
    assert user.get_room_name(3) == "sails_model_user_3:user"
    assert repr(user) == "<SyncModel user>"
    sync.close()


def test_connect_options_are_those_of_publisher_connect() -> None:
    params = inspect.signature(Publisher.connect).parameters
    keyword = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    # on_error is a parameter of SyncPublisher itself (same meaning, same type): it also
    # hears of the async publisher's failures, so it is not passed through as an option
    assert set(ConnectOptions.__annotations__) == keyword - {"on_error"}
    sync_params = inspect.signature(SyncPublisher).parameters
    assert sync_params["on_error"].annotation == params["on_error"].annotation


def test_construction_validates_but_does_not_connect() -> None:
    before = threading.active_count()
    sync = SyncPublisher("nats://user:pw@127.0.0.1:9", prefix="lazy")  # nobody listens
    assert threading.active_count() == before  # no loop thread, no connection attempt
    assert not sync.connected
    assert sync.subjects.room("lobby").startswith("lazy.")
    sync.close()
    with pytest.raises(ConfigError, match="prefix"):
        SyncPublisher("nats://127.0.0.1:9", prefix="bad prefix")
    with pytest.raises(ConfigError, match="must be a URL"):
        SyncPublisher("127.0.0.1:9")
    with pytest.raises(TypeError, match="bogus"):
        SyncPublisher("nats://127.0.0.1:9", bogus=1)  # type: ignore[call-arg]


TYPED = """
from typing import assert_type
from publisher import Model, Publisher, SyncModel, SyncPublisher, SyncSockets

async def use(pub: Publisher, sync: SyncPublisher) -> None:
    assert_type(pub.model("user"), Model)
    assert_type(await pub.model("user").publish_update(3, {}, omit="S"), None)
    assert_type(await pub.sockets.rooms("S"), list[str])
    assert_type(sync.sockets, SyncSockets)
    assert_type(sync.model("user"), SyncModel)
    assert_type(sync.sockets.rooms("S"), list[str])
    assert_type(sync.sockets.broadcast("lobby", "chat", {}, omit="S"), None)
    assert_type(sync.model("user").publish_update(3, {}, previous={}), None)
    sync.model("user").publish_update(3, {}, previus={})  # E: misspelt keyword
    sync.sockets.join("S")  # E: missing rooms
"""


def test_mypy_sees_the_real_signatures(tmp_path: Path) -> None:
    """No `Any` from the public API: the twins' types are the async definitions'."""
    source = tmp_path / "typed_use.py"
    source.write_text(TYPED)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(source)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    lines = TYPED.splitlines()
    flagged = sorted(int(e.split(":")[1]) for e in errors)
    expected = sorted(i + 1 for i, text in enumerate(lines) if "# E:" in text)
    assert flagged == expected, out.stdout
