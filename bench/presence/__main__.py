"""``python -m bench.presence``: see :mod:`bench.presence.run`."""

from bench.presence.run import main

raise SystemExit(main())
