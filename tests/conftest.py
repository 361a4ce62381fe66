"""Fixtures shared by every test package: free ports, programs the Makefile installs, and a guard
that fails a test which leaves a process of its own behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Debian packages (.ci/debian-packages) a test may need, by the names their programs go by;
# sbin directories too, where Debian puts haproxy, because a user's PATH may lack them.
PROGRAMS = {"haproxy": ("haproxy",), "chromium": ("chromium", "chromium-browser")}
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_program(name: str) -> str | None:
    """The path of the program of ``name`` (a key of :data:`PROGRAMS`, else the program's own
    name), looked up on PATH and the sbin directories; None when it is not installed."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    for program in PROGRAMS.get(name, (name,)):
        found = shutil.which(program, path=path)
        if found:
            return found
    return None


def require(name: str) -> str:
    """The path of a program ``make test`` installs; fails the test when it is missing: a
    missing declared dependency is a broken setup, and a skip would hide a regression."""
    found = find_program(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make setup` installs .ci/debian-packages")
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test files with a ``slow`` test first, each file's tests in their order: the parallel run
    (``-n 3 --dist loadfile``) starts the longest files first instead of ending on one of them
    while the other workers idle. Only the order changes; every test still runs."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow)  # stable: the rest keeps its order


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.requires("haproxy", ...)``: the test fails (not skips) when one of the
    programs is missing."""
    for mark in item.iter_markers("requires"):
        for name in mark.args:
            require(name)


def default_sigint() -> None:  # pragma: no cover - runs in the child between fork and exec
    """``preexec_fn`` for a child that must get Python's own SIGINT handler: a runner started in
    the background of a non-interactive shell ignores SIGINT (``nohup cmd &``), children inherit
    that, and Python then leaves SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
