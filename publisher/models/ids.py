"""Record ids as Sails coerces them: the one place an id's type is decided."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from shared.errors import UsageError

Id = int | str
Record = Mapping[str, Any]
IdOrRecord = Id | Record
IdsLike = IdOrRecord | Iterable[IdOrRecord]
PkType = Literal["number", "string"]

_INTEGER: Final = re.compile(r"[+-]?[0-9]+")


def scalar_id(value: object, what: str) -> Id:
    """A usable id as given: a non-empty string or an integer (integral floats too)."""
    if isinstance(value, bool) or value is None:
        raise UsageError(f"{what} must be a number or a string, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value:
        return value
    raise UsageError(f"{what} must be a number or a non-empty string, got {value!r}")


def coerce_id(value: object, pk_type: PkType, what: str = "id") -> Id:
    """Sails' parseId: a `number` primary key becomes an integer, a `string` one a string.
    Where Sails would produce NaN (`parseInt("abc")`), this raises UsageError."""
    scalar = scalar_id(value, what)
    if pk_type == "string":
        return str(scalar)
    if isinstance(scalar, int):
        return scalar
    if _INTEGER.fullmatch(scalar.strip()):
        return int(scalar)
    raise UsageError(f"{what} {scalar!r} is not a number (the primary key type is 'number')")
