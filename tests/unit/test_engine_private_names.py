"""The engine package owns Engine.IO/Socket.IO outright: the private names of
third-party objects it touches are listed here (none today), and nothing outside it
imports engineio or socketio. Adding one is a deliberate, reviewed step: update the
list and say why in docs/engine.md."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "gateway" / "engine"

ALLOWED_PRIVATE_NAMES: frozenset[str] = frozenset()
"""Underscore attributes of objects not defined in gateway/engine that it may touch."""


def _trees(folder: Path) -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(folder.rglob("*.py"))]


def _own_names(trees: list[tuple[Path, ast.Module]]) -> set[str]:
    """Underscore names the engine package defines itself (methods, attributes, slots)."""
    names: set[str] = set()
    for _, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)
                and isinstance(node.value, ast.Tuple | ast.List)
            ):
                names |= {str(e.value) for e in node.value.elts if isinstance(e, ast.Constant)}
    return names


def private_names_touched() -> set[str]:
    trees = _trees(ENGINE)
    own = _own_names(trees)
    touched: set[str] = set()
    for _, tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            dunder = name.startswith("__") and name.endswith("__")
            if name.startswith("_") and not dunder and name not in own:
                touched.add(name)
    return touched


def test_the_engine_touches_only_the_listed_private_names() -> None:
    assert private_names_touched() == ALLOWED_PRIVATE_NAMES


def test_the_scan_sees_a_private_name_of_a_foreign_object() -> None:
    """The scanner itself: `site._server` is what gateway/app.py used to read."""
    tree = ast.parse("port = site._server.sockets[0]\nself._mine = 1\nx = self._mine")
    own = _own_names([(Path("x.py"), tree)])
    touched = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and n.attr.startswith("_") and n.attr not in own
    }
    assert touched == {"_server"}


def _imported_modules(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_no_engineio_or_socketio_anywhere_in_the_product() -> None:
    """Not even in the engine: it speaks the protocols itself (tests use the clients)."""
    offenders = {}
    for package in ("gateway", "shared", "publisher"):
        for path, tree in _trees(ROOT / package):
            found = _imported_modules(tree) & {"engineio", "socketio"}
            if found:
                offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert offenders == {}


def test_only_the_engine_touches_websockets() -> None:
    """aiohttp's websocket types are the engine's business alone."""
    offenders = []
    for package in ("gateway", "shared", "publisher"):
        for path, tree in _trees(ROOT / package):
            if ENGINE in path.parents:
                continue
            source = ast.unparse(tree)
            if "WebSocketResponse" in source or "WSMsgType" in source:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
