"""The history stream's wanted config and the reconcile decision, without a server."""

from __future__ import annotations

from nats.js.api import RePublish, StorageType

from gateway.history.stream import desired_config, differences, merged_config
from gateway.settings import HistorySettings
from shared.history import METADATA_KEY
from shared.subjects import Subjects


def settings(text: str = "chat:*=300/2m,*=50/10m", **kw: object) -> HistorySettings:
    return HistorySettings(history=text, **kw)  # type: ignore[arg-type]


def test_the_wanted_config_follows_the_rules_and_settings() -> None:
    config = desired_config(
        Subjects("acme.prod"), settings(history_replicas=3, history_storage="memory")
    )
    assert config.name == "sailcast_history_acme_prod"
    assert config.subjects == ["acme.prod.h.>"]
    assert config.max_msgs_per_subject == 300  # the largest rule's
    assert config.max_age == 600  # the longest rule's
    assert config.allow_direct is True
    assert config.num_replicas == 3
    assert config.storage is StorageType.MEMORY
    assert config.duplicate_window == 120
    assert config.republish == RePublish(src="acme.prod.h.>", dest="acme.prod.r.>")
    assert config.metadata == {METADATA_KEY: "chat:*=300/2m,*=50/10m"}


def test_the_duplicate_window_never_exceeds_the_age() -> None:
    assert desired_config(Subjects("p"), settings("*=10/30s")).duplicate_window == 30


def test_only_managed_fields_count_as_differences() -> None:
    wanted = desired_config(Subjects("p"), settings())
    server_side = wanted.evolve(
        metadata={**(wanted.metadata or {}), "_nats.ver": "2.11.0"},
        max_consumers=-1,
        description="edited by hand",
    )
    assert differences(server_side, wanted) == []
    assert differences(wanted.evolve(max_age=600 + 1e-6), wanted) == []


def test_each_managed_field_is_noticed() -> None:
    wanted = desired_config(Subjects("p"), settings())
    cases = {
        "subjects": wanted.evolve(subjects=["p.other.>"]),
        "max_msgs_per_subject": wanted.evolve(max_msgs_per_subject=1),
        "max_age": wanted.evolve(max_age=1.0),
        "allow_direct": wanted.evolve(allow_direct=False),
        "duplicate_window": wanted.evolve(duplicate_window=1.0),
        "num_replicas": wanted.evolve(num_replicas=3),
        "storage": wanted.evolve(storage=StorageType.MEMORY),
        "republish": wanted.evolve(republish=RePublish(src="p.h.>", dest="p.x.>")),
        "metadata": wanted.evolve(metadata={METADATA_KEY: "*=1/1s"}),
    }
    for field, current in cases.items():
        assert differences(current, wanted) == [field], field
    headers_only = wanted.evolve(republish=RePublish("p.h.>", "p.r.>", headers_only=True))
    assert differences(headers_only, wanted) == ["republish"]


def test_an_update_keeps_what_we_do_not_manage() -> None:
    wanted = desired_config(Subjects("p"), settings())
    current = desired_config(Subjects("p"), settings("*=1/1m")).evolve(
        storage=StorageType.MEMORY, metadata={"_nats.ver": "2.11.0", METADATA_KEY: "*=1/1m"}
    )
    update = merged_config(current, wanted)
    assert update.storage is StorageType.MEMORY  # JetStream cannot change it in place
    assert update.metadata == {"_nats.ver": "2.11.0", METADATA_KEY: wanted.metadata[METADATA_KEY]}  # type: ignore[index]
    assert differences(update, wanted) == ["storage"]
