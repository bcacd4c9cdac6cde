"""Child processes of `sailcast dev` (and of the embedded nats-server): each in its own
session, so a Ctrl-C meant for the parent does not stop them all at once and the parent
can stop them in order; and, on Linux, sent SIGTERM by the kernel if the parent dies
without that chance (SIGKILL, a crash), so nothing is left running. The kernel ties that
signal to the thread that started the child: start children from the main thread."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from typing import Any, Final

PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    if sys.platform.startswith("linux"):
        kwargs.setdefault("preexec_fn", _die_with_parent)
    return subprocess.Popen(args, start_new_session=True, **kwargs)


def stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within timeout_s; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
