"""Helpers without I/O that unit and integration tests both may import (recorded data,
pure builders). Nothing here opens a socket, starts a process or touches the network:
tests/unit/test_unit_imports.py checks it."""
