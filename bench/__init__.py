"""Sailcast fanout benchmark harness (issue 7).

Every figure is printed next to its ratio to the plain-aiohttp reference measured in
the same run, because absolute numbers on a shared 2-core machine drift from run to
run while ratios measured side by side do not. Entry point: ``python -m bench.run``.
"""
