"""``on_drain`` hooks are awaited before exit, whatever D is; a hung one is cut at its own
timeout and logged. Real servers and signals."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossless.lifecycle import Lifecycle
from lossless.settings import Settings
from tests.runtime.conftest import Server


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_long_drain_hook_completes_before_exit(serve, kind: str, tmp_path: Path) -> None:
    """1. an on_drain hook that takes 0.5 s (timeout 2 s) and writes a file, D = 0 2. SIGTERM.
    Result: the file exists when the process has exited 0; start and end are logged."""
    marker = tmp_path / "flushed"
    server: Server = serve(
        kind,
        "--drain-delay",
        "0",
        target="prod_apps:wsgi" if kind == "gunicorn" else "prod_apps:asgi",
        env={"APP_DRAIN_HOOK_FILE": str(marker), "APP_DRAIN_HOOK_SECONDS": "0.5"},
    )
    server.wait_ready()
    server.signal()
    assert server.wait_exit(15) == 0, server.stderr()
    assert marker.read_text() == "flushed\n"
    names = [e["event"] for e in server.events()]
    assert "drain_hook_started" in names and "drain_hook_done" in names, names


def test_hung_drain_hook_is_cut_at_its_timeout(serve, tmp_path: Path) -> None:
    """1. a hook that hangs (timeout 0.5 s) and one that takes 0.3 s, D = 0 2. SIGTERM with a
    5 s deadline. Result: the hung hook is logged as timed out, the other completes, and the
    process exits 0 well within the deadline."""
    marker = tmp_path / "flushed"
    server: Server = serve(
        "uvicorn",
        "--drain-delay",
        "0",
        "--shutdown-timeout",
        "5",
        target="prod_apps:asgi",
        env={
            "APP_DRAIN_HOOK_FILE": str(marker),
            "APP_DRAIN_HOOK_SECONDS": "0.3",
            "APP_DRAIN_HOOK_HANG": "0.5",
        },
    )
    server.wait_ready()
    t0 = server.signal()
    assert server.wait_exit(15) == 0, server.stderr()
    assert server.exited_at is not None and server.exited_at - t0 < 5
    timeouts = [e for e in server.events() if e["event"] == "drain_hook_timeout"]
    assert [e["hook"] for e in timeouts] == ["hangs"], server.stderr()
    assert marker.exists()


def test_stopped_waits_for_drain_hooks_and_cuts_at_the_deadline(tmp_path: Path) -> None:
    """In process: a hook still running at the deadline is recorded as forced; one that ends
    in time (0.2 s of a 3 s deadline: room for a thread that waits for the CPU) is awaited by
    ``stopped()``."""
    done = tmp_path / "done"
    lc = Lifecycle(Settings(drain_delay=0, shutdown_timeout=3, drain_hook_timeout=30))

    def slow() -> None:
        import time

        time.sleep(0.2)
        done.write_text("ok")

    def hangs() -> None:
        import threading

        threading.Event().wait(30)

    lc.on_drain(slow)
    lc.on_drain(hangs)
    lc.drain()
    code = lc.stopped()
    assert done.read_text() == "ok"
    assert code == lc.settings.forced_exit_code
    assert any("drain hook hangs" in what for what in lc.forced), lc.forced
