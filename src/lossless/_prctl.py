"""Linux ``prctl(2)`` for the processes lossless starts: the supervisor (``lossless run``,
:mod:`lossless.supervise._process`) and the verify lab's replicas and HAProxy
(:mod:`lossless.verify.lab.process`, :mod:`lossless.verify.haproxy.process`).

Neutral ground under the import boundaries (docs/architecture.md, "Boundaries"): standard library
only, imported by the runtime and by verify alike. Elsewhere than Linux (no ``prctl`` in the C
library) every function here is a no-op that says so in its result.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import signal
from collections.abc import Callable

__all__ = ["PR_SET_CHILD_SUBREAPER", "PR_SET_PDEATHSIG", "die_with_parent", "prctl"]

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def prctl() -> Callable[..., int] | None:
    """The C library's ``prctl`` (looked up once per process), or None without one."""
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL the calling process when its parent thread dies
    (``PR_SET_PDEATHSIG``): a safety net for a parent killed with SIGKILL, whose children would
    otherwise outlive it. Meant for the child between fork and exec (``preexec_fn=``), where it
    makes the one system call and never raises; look :func:`prctl` up in the parent first (any
    call does) so that the child does no dynamic loading. The signal is kept across exec."""
    fn = prctl()
    if fn is not None:
        with contextlib.suppress(Exception):
            fn(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
