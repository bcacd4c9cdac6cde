"""What the images install covers what our code imports.

The pod contract test runs the gateway from the source tree with the whole dev
virtualenv, so an import that only a dev or test package satisfies would pass it and
fail in the image, which installs `.[gateway]` (gateway) or `.` (worker). Here every
third-party top-level import in gateway/, shared/ and publisher/ is read with `ast`
and must come from a distribution pyproject.toml declares: the base dependencies plus
the gateway extra for the gateway image, the base dependencies alone for shared/ and
publisher/ (what a worker gets). Distributions are matched to import names with
importlib.metadata.packages_distributions(). An import with a fallback (inside
`try: ... except ImportError`) or for type checkers only (`if TYPE_CHECKING:`) needs
no declaration.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from tests.deploy.deploy_kit import ROOT

pytestmark = pytest.mark.deploy

OURS = ("gateway", "shared", "publisher")
WORKER_PACKAGES = ("shared", "publisher")

# Imports without a fallback that a worker may still lack the distribution for, because
# they run only when the caller hands in an object of that distribution. (file, import)
# -> why.
CALLER_PROVIDED = {
    ("publisher/stats.py", "prometheus_client"): (
        "runs only when the caller passes a prometheus_client CollectorRegistry"
    ),
}


@dataclass(frozen=True)
class Import:
    top: str  # top-level module name
    where: str  # path:line
    guarded: bool  # has a fallback, or exists for type checkers only

    @property
    def path(self) -> str:
        return self.where.rsplit(":", 1)[0]


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds
    )


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def scan(source: str, name: str) -> list[Import]:
    """Absolute imports in `source` (module imports, and imports inside functions)."""
    found: list[Import] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try | ast.TryStar):
            fallback = any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                visit(child, guarded or fallback)
            for part in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(part, guarded)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                found.append(Import(top, f"{name}:{node.lineno}", guarded))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(Import(node.module.split(".")[0], f"{name}:{node.lineno}", guarded))
        for sub in ast.iter_child_nodes(node):
            visit(sub, guarded)

    visit(ast.parse(source, filename=name), False)
    return found


def sources(packages: Iterable[str]) -> list[tuple[str, str]]:
    """(path relative to the repository, text) of every module of `packages`."""
    packages = list(packages)
    out = [
        (path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
        for package in packages
        for path in sorted((ROOT / package).rglob("*.py"))
    ]
    assert out, f"no sources under {packages}"
    return out


def third_party_imports(packages: Iterable[str]) -> list[Import]:
    return [
        imp
        for name, text in sources(packages)
        for imp in scan(text, name)
        if imp.top not in sys.stdlib_module_names and imp.top not in OURS
    ]


def _normalize(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


@functools.cache
def declared(*groups: str) -> frozenset[str]:
    """Distribution names of pyproject's base dependencies ("base") and extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = set()
    for group in groups:
        reqs = (
            project["dependencies"] if group == "base" else project["optional-dependencies"][group]
        )
        for req in reqs:
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
            assert match, f"cannot read the requirement {req!r}"
            names.add(_normalize(match.group(1)))
    return frozenset(names)


@functools.cache
def providers() -> dict[str, frozenset[str]]:
    """Top-level import name -> installed distributions that provide it."""
    return {
        top: frozenset(_normalize(d) for d in dists)
        for top, dists in importlib.metadata.packages_distributions().items()
    }


def missing(imports: Iterable[Import], allowed: frozenset[str]) -> list[str]:
    problems = []
    for imp in imports:
        if imp.guarded:
            continue
        dists = providers().get(imp.top)
        if not dists:
            problems.append(f"{imp.where}: `{imp.top}` is provided by no installed distribution")
        elif not dists & allowed:
            problems.append(f"{imp.where}: `{imp.top}` comes from {sorted(dists)}, not declared")
    return problems


def test_the_gateway_image_installs_what_the_code_imports() -> None:
    """gateway.Dockerfile installs `.[gateway]`: base dependencies + the gateway extra."""
    imports = third_party_imports(OURS)
    assert missing(imports, declared("base", "gateway")) == []


def test_a_worker_installs_what_shared_and_publisher_import() -> None:
    """worker.Dockerfile installs `.`: the base dependencies only."""
    imports = [
        imp
        for imp in third_party_imports(WORKER_PACKAGES)
        if (imp.path, imp.top) not in CALLER_PROVIDED
    ]
    assert missing(imports, declared("base")) == []


def test_caller_provided_exemptions_are_still_needed() -> None:
    unguarded = {(i.path, i.top) for i in third_party_imports(WORKER_PACKAGES) if not i.guarded}
    stale = set(CALLER_PROVIDED) - unguarded
    assert not stale, f"no longer imported there: drop {sorted(stale)} from CALLER_PROVIDED"
    assert not {top for _, top in CALLER_PROVIDED} & {
        top for top, dists in providers().items() if dists & declared("base")
    }, "now a base dependency: drop the exemption"


def _distribution_lookup(node: ast.AST) -> str | None:
    """ "python-engineio" for `importlib.metadata.version("python-engineio")`."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("version", "distribution", "metadata", "files", "requires")
        and ast.unparse(node.func.value) in ("importlib.metadata", "metadata")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


def test_distribution_lookups_name_declared_distributions() -> None:
    """importlib.metadata.version("python-engineio") and the like fail at run time with
    PackageNotFoundError when the distribution is not installed."""
    lookups = [
        (name, _normalize(distribution))
        for name, text in sources(OURS)
        for node in ast.walk(ast.parse(text))
        if (distribution := _distribution_lookup(node))
    ]
    probe = ast.parse('import importlib.metadata\nv = importlib.metadata.version("aiohttp")')
    seen = [d for node in ast.walk(probe) if (d := _distribution_lookup(node))]
    assert seen == ["aiohttp"], "the scan no longer sees a lookup"
    for name, distribution in lookups:
        groups = ("base",) if name.split("/")[0] in WORKER_PACKAGES else ("base", "gateway")
        assert distribution in declared(*groups) | {"sailcast"}, f"{name}: {distribution}"


def test_the_scan_sees_the_imports_and_their_guards() -> None:
    """Guard the guard: the scanner finds the real imports, and tells guarded ones apart."""
    gateway = {i.top for i in third_party_imports(["gateway"]) if not i.guarded}
    assert {"aiohttp", "prometheus_client", "nats", "orjson", "jwt"} <= gateway
    assert not gateway & {"socketio", "engineio"}  # gateway/engine speaks the protocols itself
    example = """
import os, orjson
from typing import TYPE_CHECKING
from . import sibling
if TYPE_CHECKING:
    import socketio
try:
    import uvloop
except ImportError:
    import asyncio as uvloop
try:
    import tomli
except (ModuleNotFoundError, ValueError):
    pass
try:
    import yaml
except Exception:
    pass
def lazy():
    from jwt import decode
"""
    found = {(i.top, i.guarded) for i in scan(example, "example.py")}
    assert found == {
        ("os", False),
        ("orjson", False),
        ("typing", False),
        ("socketio", True),
        ("uvloop", True),
        ("asyncio", False),
        ("tomli", True),
        ("yaml", False),  # `except Exception` is not a declared fallback
        ("jwt", False),
    }
    problems = missing(scan("import pytest\nimport orjson\n", "x.py"), declared("base"))
    assert problems == ["x.py:1: `pytest` comes from ['pytest'], not declared"]
