"""The shared prctl helpers (lossless/_prctl.py): a child started with
``preexec_fn=die_with_parent`` does not outlive its parent killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from lossless._prctl import prctl
from tests.supervise._proc import alive

PARENT = """
import subprocess, sys, time
from lossless._prctl import die_with_parent, prctl
prctl()
child = subprocess.Popen(
    ["sleep", "60"], preexec_fn=die_with_parent, start_new_session=True
)
print(child.pid, flush=True)
time.sleep(60)
"""


def test_the_child_gets_sigkill_when_its_parent_is_killed() -> None:
    """1. a parent starts `sleep 60` with preexec_fn=die_with_parent 2. the parent gets SIGKILL
    Result: the kernel kills the sleep (it would otherwise run on, reparented)."""
    assert prctl() is not None  # Linux: the C library has prctl
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.01)  # bounded polling on the observable condition
        assert not alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if child and alive(child):
            os.killpg(child, signal.SIGKILL)
        if parent.stdout is not None:
            parent.stdout.close()
