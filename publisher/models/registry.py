"""The models of one application: `define`, `to_one`, `to_many` (Sails' model
definitions, reduced to what pub/sub needs: associations, primary key, contexts)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from publisher.models.ids import PkType
from shared.errors import InvalidRoomName, UsageError

V1_CONTEXTS: Final = ("update", "destroy", "message")
"""Sails 0.12 contexts every model has; each collection adds `add:<a>` and `remove:<a>`."""

_IDENTITY: Final = re.compile(r"[A-Za-z0-9_-]+")


def as_contexts(contexts: str | Iterable[str], what: str = "contexts") -> tuple[str, ...]:
    """Sails 0.12 contexts (the suffix of a record's room names): one, or several, as in
    Sails (a string is one context, not its characters); each a non-empty string, or
    InvalidRoomName naming the value. Empty is allowed (autosubscribe: false)."""
    if isinstance(contexts, str):
        items: list[object] = [contexts]
    elif isinstance(contexts, bytes | bytearray | memoryview) or not isinstance(contexts, Iterable):
        raise InvalidRoomName(f"{what} must be a context name or a list of them, got {contexts!r}")
    else:
        items = list(contexts)
    for c in items:
        if not isinstance(c, str) or not c:
            raise InvalidRoomName(f"{what} must be non-empty strings, got {c!r} in {contexts!r}")
    return tuple(dict.fromkeys(c for c in items if isinstance(c, str)))


@dataclass(frozen=True, slots=True)
class Association:
    """One side of an association: `to_one("user")` (Sails `model: 'user'`) or
    `to_many("pet", via="owner")` (Sails `collection: 'pet', via: 'owner'`)."""

    model: str
    many: bool
    via: str | None = None


def to_one(model: str, *, via: str | None = None) -> Association:
    return Association(identity_of(model), False, via)


def to_many(model: str, *, via: str | None = None) -> Association:
    return Association(identity_of(model), True, via)


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


def identity_of(identity: object) -> str:
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
        autosubscribe: str | Iterable[str] | None = None,
    ) -> ModelSpec:
        ident = identity_of(identity)
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
        auto = None if autosubscribe is None else as_contexts(autosubscribe, "autosubscribe")
        if auto is not None and not contexts:
            raise UsageError(f"{ident}: autosubscribe only applies with contexts=True")
        spec = ModelSpec(ident, MappingProxyType(assocs), primary_key, pk_type, contexts, auto)
        known = self._specs.get(ident)
        if known is not None and known != spec:
            raise UsageError(f"model {ident!r} is already defined differently: {known}")
        self._specs[ident] = spec
        return spec

    def spec(self, identity: str) -> ModelSpec:
        ident = identity_of(identity)
        return self._specs.get(ident) or ModelSpec(ident)

    def is_defined(self, identity: str) -> bool:
        return identity_of(identity) in self._specs


default_registry: Final = ModelRegistry()
"""The registry `pub.model(identity)` and `sync_pub.model(identity)` use."""
define: Final = default_registry.define
