"""``python -m bench.delivery``: see :mod:`bench.delivery.run`."""

from bench.delivery.run import main

raise SystemExit(main())
