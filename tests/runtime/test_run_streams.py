"""Open streams end cleanly at t0 + D under ``lossless run`` + the middleware, whatever the server.

``lossless run`` tells every descendant its t0 (shared drain state), its D and its stream close
window (``LOSSLESS_*`` variables); the middleware in each worker ends the open streams at
t0 + D, when the server gets its stop signal and starts waiting for them. Scenario (each
server): 1. an SSE client and a chunked client connected 2. SIGTERM to ``lossless run`` (D = 1 s,
a 0.3 s window). Result: each stream gets its terminating chunk at or after t0 + D and soon
after t0 + D + window, the app's ``finally`` ran for both, and ``lossless run`` exits 0 long
before the deadline (with its child's exit status), nothing forced. Before, the streams ran on until the server's own graceful
timeout or the deadline cut them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.runtime.conftest import HERE, ROOT
from tests.runtime.test_streams import StreamClient
from tests.supervise._proc import Proc, lossless, spawn

__all__ = ["spawn"]

BIN = os.path.dirname(sys.executable)
APP = "run_stream_app:app"
DELAY, WINDOW, TIMEOUT = 1.0, 0.3, 20.0

#: name -> (command for a port, the exit code of a clean stop, run's extra flags). uvicorn raises
#: the stop signal again once it has shut down cleanly, so its exit status says SIGTERM, and
#: lossless run passes its child's status on. hypercorn runs in one process (``--workers 0``):
#: its worker processes have no handler for the group's SIGTERM, and its master terminates the
#: other workers as soon as one exits (docs/run.md).
SERVERS: dict[str, tuple[Callable[[int], list[str]], int, tuple[str, ...]]] = {
    "uvicorn": (
        lambda port: [f"{BIN}/uvicorn", "--port", str(port), "--log-level", "warning", APP],
        128 + 15,
        (),
    ),
    "hypercorn": (
        lambda port: [
            *(f"{BIN}/hypercorn", "--bind", f"127.0.0.1:{port}", "--workers", "0"),
            *("--graceful-timeout", "15", APP),
        ],
        0,
        (),
    ),
    "gunicorn-uvicornworker": (
        lambda port: [
            *(f"{BIN}/gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2"),
            *("-b", f"127.0.0.1:{port}", "--graceful-timeout", "15", APP),
        ],
        0,
        (),
    ),
}


@pytest.mark.parametrize("name", list(SERVERS))
def test_streams_end_at_t0_plus_d_under_lossless_run(spawn, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    command, clean_exit, stop = SERVERS[name]
    finally_file = tmp_path / "finally"
    port = free_port()
    run: Proc = spawn(
        lossless(
            "run", "--drain-delay", str(DELAY), "--stream-close-window", str(WINDOW),
            "--shutdown-timeout", str(TIMEOUT), *stop, "--", *command(port),
        ),
        env={
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), str(HERE)]),
            "APP_FINALLY_FILE": str(finally_file),
        },
    )  # fmt: skip
    _wait_listening(run, port)
    clients = [StreamClient(port, "/sse"), StreamClient(port, "/chunked")]
    for client in clients:
        client.start()
    for client in clients:
        assert client.first.wait(10), run.stderr()
    run.signal()
    for client in clients:
        client.join(TIMEOUT)
        assert not client.is_alive(), run.stderr()
    assert run.wait_exit(TIMEOUT) == clean_exit, run.stderr()
    mine = [e for e in run.events() if e["event"] == "draining" and e["pid"] == run.pid]
    assert mine, run.stderr()
    t0 = float(mine[0]["ts"]) - float(mine[0].get("t_plus") or 0.0)  # type: ignore[arg-type]
    for client in clients:
        assert client.error is None, client.error
        assert client.data.startswith(b"HTTP/1.1 200"), client.data[:200]
        assert client.ended_at is not None, (client.data[-80:], run.stderr())
        assert client.ended_at >= t0 + DELAY, "a stream ended before t0 + D"
        # a stream left to run on ends at the deadline (t0 + 20 s) or the server's graceful
        # timeout (15 s); 2 s of margin for this machine's CPU waits
        assert client.ended_at <= t0 + DELAY + WINDOW + 2.0, client.ended_at - t0
    ended = [e for e in run.events() if e["event"] == "stream_ended"]
    assert len(ended) == 2, run.stderr()
    assert not [e for e in run.events() if e["event"] == "forced"], run.stderr()
    assert "Traceback" not in run.stderr(), run.stderr()
    ran = finally_file.read_text().split()
    assert "sse" in ran and "chunked" in ran, ran


def _wait_listening(run: Proc, port: int) -> None:
    import socket
    import time

    end = time.monotonic() + 30
    while time.monotonic() < end:
        assert run.proc.poll() is None, run.stderr()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}:\n{run.stderr()}")


def test_lossless_run_tells_its_descendants_its_d_and_window(spawn) -> None:  # type: ignore[no-untyped-def]
    """The child's lifecycle counts t0 + D with the supervisor's D (and its timeout and stream
    window), whatever its own environment said: the middleware ends streams when the server is
    signalled, and ``lossless serve`` under ``lossless run`` closes its listeners then."""
    show = (
        "import os; print(*(os.environ[k] for k in ('LOSSLESS_DRAIN_DELAY', "
        "'LOSSLESS_SHUTDOWN_TIMEOUT', 'LOSSLESS_STREAM_CLOSE_WINDOW')))"
    )
    run: Proc = spawn(
        lossless("run", "--drain-delay", "7", "--shutdown-timeout", "40", "--", sys.executable,
                 "-c", show),
        env={"LOSSLESS_DRAIN_DELAY": "1", "LOSSLESS_STREAM_CLOSE_WINDOW": "0.5"},
    )  # fmt: skip
    assert run.wait_exit(20) == 0, run.stderr()
    assert run.out[-1].split() == ["7.0", "40.0", "0.5"], run.out
