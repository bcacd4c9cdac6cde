"""``python -m bench.systems.no_uvloop MODULE ARGS...``: run ``python -m MODULE ARGS...``
with uvloop unimportable.

The gateway runs on uvloop whenever it can import it and has no flag to choose; this
is how ``--server-loop asyncio`` puts it on the stock asyncio loop like the other
Python servers, without changing the gateway.
"""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m bench.systems.no_uvloop MODULE [ARGS...]")
    sys.modules["uvloop"] = None  # type: ignore[assignment]  # `import uvloop` -> ImportError
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
