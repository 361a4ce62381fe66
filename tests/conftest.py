"""Fixtures shared by every test package: free ports, and a guard that fails a test which leaves
a process of its own behind."""

from __future__ import annotations

import os
import signal
import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """``preexec_fn`` for servers a fixture starts: the kernel SIGKILLs the child when the test
    runner dies (killed, or an xdist worker torn down), so no session-scoped server (etcd,
    ZooKeeper) outlives a run whose teardown never ran."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def parse_events(lines: list[str]) -> list[dict[str, object]]:
    """The structured lifecycle events (JSON objects with an ``event`` key) among log lines."""
    import json

    found = []
    for line in list(lines):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "event" in item:
            found.append(item)
    return found


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    except OSError:
        pass
    return found


@pytest.fixture(autouse=True)
def no_leaked_children() -> object:
    """Fail the test if it leaves a live child process of the test runner behind."""
    before = _children(os.getpid())
    yield
    import time

    end = time.monotonic() + 5
    leaked = _children(os.getpid()) - before
    while leaked and time.monotonic() < end:
        time.sleep(0.05)
        leaked = _children(os.getpid()) - before
    assert not leaked, f"test leaked child processes: {sorted(leaked)}"
