"""Routes: Sails route addresses compiled to regular expressions, and matching a
method and path against them (first registered wins, HEAD falls back to GET)."""

from __future__ import annotations

import inspect
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from shared.errors import UsageError
from shared.vrequest import METHODS

Handler = Callable[..., Any]
ANY_METHOD: Final = "all"
_PARAM: Final = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)(\??)")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: Handler
    wants_res: bool
    is_async: bool


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A Sails route address as a regex: `:name`, a last `:name?`, `*` (group `_0`)."""
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise UsageError(f"a route pattern must start with '/', got {pattern!r}")
    segments = [s for s in pattern.split("/") if s]
    out = []
    for i, seg in enumerate(segments):
        if seg == "*":
            if i != len(segments) - 1:
                raise UsageError(f"'*' must be the last segment in {pattern!r}")
            out.append("(?:/(?P<_0>.*))?")
            continue
        match = _PARAM.fullmatch(seg)
        if match is None:
            if ":" in seg:
                raise UsageError(f"bad parameter segment {seg!r} in {pattern!r}")
            out.append("/" + re.escape(seg))
            continue
        name, optional = match.groups()
        if optional and i != len(segments) - 1:
            raise UsageError(f"only the last parameter may be optional in {pattern!r}")
        out.append(f"(?:/(?P<{name}>[^/]+)){'?' if optional else ''}")
    return re.compile("".join(out) + "/?", re.IGNORECASE)


def arity_of(handler: Handler, what: str) -> int:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}: cannot inspect handler {handler!r}") from exc
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 2
    return len(positional)


def is_async(handler: Handler) -> bool:
    return inspect.iscoroutinefunction(handler)


def make_route(address: str, handler: Handler, *, method: str | None = None) -> Route:
    """`"GET /user/:id"`, or `"/user/:id"` with `method="get"`; a pattern without a
    method answers every method."""
    if method is None:
        verb, sep, pattern = address.strip().partition(" ")
        if not sep:
            verb, pattern = ANY_METHOD, verb
    else:
        verb, pattern = method, address
    verb = verb.lower()
    if verb not in (*METHODS, ANY_METHOD):
        raise UsageError(f"unknown method {verb!r} for route {address!r}")
    if not callable(handler):
        raise UsageError(f"handler for {address!r} is not callable")
    arity = arity_of(handler, address)
    if arity not in (1, 2):
        raise UsageError(f"handler for {address!r} must take (req) or (req, res)")
    return Route(
        method=verb,
        pattern=pattern.strip(),
        regex=compile_pattern(pattern.strip()),
        handler=handler,
        wants_res=arity == 2,
        is_async=is_async(handler),
    )


def find_route(
    routes: Sequence[Route], method: str, path: str
) -> tuple[Route, dict[str, str]] | None:
    """The first route for this method (or any method) matching the path, and its
    URL-decoded parameters; HEAD falls back to the GET routes."""
    method = method.lower()
    for route in routes:
        if route.method not in (method, ANY_METHOD):
            continue
        found = route.regex.fullmatch(path)
        if found is not None:
            params = {
                ("0" if k == "_0" else k): urllib.parse.unquote(v)
                for k, v in found.groupdict().items()
                if v is not None
            }
            return route, params
    if method == "head":
        return find_route(routes, "get", path)
    return None
