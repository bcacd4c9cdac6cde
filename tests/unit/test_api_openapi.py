"""docs/api.openapi.json and the HTTP API's method table (gateway/api_methods.py) say the
same thing: every method and field documented, nothing documented that does not exist,
and the documented schemas accept exactly what the API's parser accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

from gateway.api import BATCH
from gateway.api_methods import METHODS, FieldError, Kind, Method

DOC: Final[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "api.openapi.json").read_text()
)
GOOD: Final[dict[Kind, list[Any]]] = {
    Kind.ROOMS: ["lobby", ["a", "b"], ["a", "a"]],
    Kind.ROOM: ["lobby"],
    Kind.SOCKET_IDS: ["sid1", ["sid1", "sid2"], []],
    Kind.SOCKET_ID: ["sid1"],
    Kind.EVENT: ["chat", ""],
    Kind.DATA: [None, 1, "x", [1], {"a": {"b": [True]}}],
    Kind.USER_IDS: ["u1", 42, ["u1", 7, "u1"]],
}
BAD: Final[dict[Kind, list[Any]]] = {
    Kind.ROOMS: [5, None, "", [], [""], ["a", 3], {"a": 1}],
    Kind.ROOM: [5, None, "", ["a"]],
    Kind.SOCKET_IDS: [5, None, "", [""], [1]],
    Kind.SOCKET_ID: [5, None, "", ["a"]],
    Kind.EVENT: [5, None, ["chat"]],
    Kind.DATA: [],
    Kind.USER_IDS: [None, "", True, 1.5, [], [""], [None], ["u", False], {"u": 1}, "x" * 257],
}


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": DOC["components"]})


def _body_schema(path: str) -> dict[str, Any]:
    schema: dict[str, Any] = DOC["paths"][path]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    return schema


def test_the_document_is_openapi_3_1() -> None:
    assert DOC["openapi"].startswith("3.1.")
    assert DOC["components"]["securitySchemes"]["apikey"] == {
        **DOC["components"]["securitySchemes"]["apikey"],
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
    }


def test_every_method_is_documented_and_nothing_else() -> None:
    assert set(DOC["paths"]) == {f"/api/{m}" for m in (*METHODS, BATCH)}
    for path, item in DOC["paths"].items():
        assert set(item) == {"post"}, path
        assert item["post"]["operationId"] == path.removeprefix("/api/")
    batch = _body_schema("/api/batch")["properties"]["commands"]["items"]
    assert batch["properties"]["method"]["enum"] == list(METHODS)


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_every_field_is_documented_and_nothing_else(method: Method) -> None:
    schema = _body_schema(f"/api/{method.name}")
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == [f.name for f in method.fields]
    assert schema.get("required", []) == [f.name for f in method.fields if f.required]
    assert DOC["paths"][f"/api/{method.name}"]["post"]["summary"] == method.summary


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_documented_schemas_accept_what_the_parser_accepts(method: Method) -> None:
    validator = _validator(_body_schema(f"/api/{method.name}"))
    minimal = {f.name: GOOD[f.kind][0] for f in method.fields if f.required}
    for f in method.fields:
        for value in GOOD[f.kind]:
            body = {**minimal, f.name: value}
            validator.validate(body)
            method.parse(body)
        for value in BAD[f.kind]:
            body = {**minimal, f.name: value}
            with pytest.raises(ValidationError):
                validator.validate(body)
            with pytest.raises(FieldError) as caught:
                method.parse(body)
            assert caught.value.field == f.name
        if f.required:
            missing = {k: v for k, v in minimal.items() if k != f.name}
            with pytest.raises(ValidationError):
                validator.validate(missing)
            with pytest.raises(FieldError, match="required"):
                method.parse(missing)
    with pytest.raises(ValidationError):
        validator.validate({**minimal, "extra": 1})
    with pytest.raises(FieldError, match="unknown field"):
        method.parse({**minimal, "extra": 1})
