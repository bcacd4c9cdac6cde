"""The one place the version lives (pyproject reads the same number)."""

from typing import Final

__version__: Final = "0.1.0"
WIRE_VERSION: Final = 1
