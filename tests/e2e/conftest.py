"""Fixtures of the e2e suite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from gateway.children import stop
from gateway.embedded_nats import EmbeddedNats
from tests.e2e.demo_kit import ROOT


@pytest.fixture
def demo_worker(nats_server: EmbeddedNats, prefix: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "SAILCAST_NATS_URL": nats_server.url,
        "SAILCAST_PREFIX": prefix,
        "SAILCAST_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "publisher.demo"], env=env, cwd=ROOT, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline(), "the demo worker exited before it was ready"
    yield proc
    stop(proc, timeout_s=10)
