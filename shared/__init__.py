"""Pieces every Sailcast process agrees on: subjects, room encoding, envelope, config.

Nothing here imports NATS, Socket.IO, aiohttp or Prometheus, so a worker that only
publishes stays light (a test enforces this).
"""

from shared.version import __version__

__all__ = ["__version__"]
