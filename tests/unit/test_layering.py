"""`import publisher` / `import shared` stay light: a worker need not install the
gateway's web stack.

nats-py imports aiohttp opportunistically when it happens to be installed (for its
optional websocket transport), so "not imported" is checked the way a worker sees it:
in a fresh interpreter where the heavy packages are absent (blocked), importing and
using our packages must work and must not try to import them. Our own sources are also
checked statically.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("aiohttp", "socketio", "engineio", "prometheus_client")
ROOT = Path(__file__).resolve().parents[2]

BLOCKER = """
import importlib.abc, sys
HEAVY = {heavy!r}
tried = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in HEAVY:
            tried.append(name)
            raise ImportError(f'{{name}} is not installed')
        return None
sys.meta_path.insert(0, Block())
import {module}
from shared.envelope import encode_args, encode_data
encode_data('bc', encode_args('chat', {{'x': 1}}), ts=0.0, rooms=['lobby'])
ours = [t for t in tried if t.split('.')[0] in HEAVY]
loaded = [m for m in HEAVY if m in sys.modules and sys.modules[m] is not None]
print(','.join(loaded) + '|' + ','.join(sorted(set(ours))))
"""


@pytest.mark.parametrize(
    "module", ["shared", "publisher", "publisher.sync", "publisher.router", "publisher.demo"]
)
def test_import_works_without_the_web_stack(module: str) -> None:
    code = BLOCKER.format(heavy=HEAVY, module=module)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded, _, attempted = out.stdout.strip().partition("|")
    assert loaded == ""
    # the only attempt allowed is nats-py's optional websocket transport
    assert set(filter(None, attempted.split(","))) <= {"aiohttp"}


def _imported_modules(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_layering_of_our_sources() -> None:
    shared = _imported_modules("shared")
    assert not shared & {*HEAVY, "nats", "publisher", "gateway"}
    publisher = _imported_modules("publisher")
    assert not publisher & {"aiohttp", "socketio", "engineio", "gateway"}
    # prometheus_client only lazily (PublisherStats with a registry): the blocked-import
    # test above fails if publisher imports it at import time.
