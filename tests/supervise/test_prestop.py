"""``lossless prestop``: sleep without a sleep binary; start a drain and wait for its delay."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.supervise._proc import Proc, lossless

Spawn = Callable[..., Proc]


def test_sleep_is_pure_python_and_exits_0(spawn: Spawn) -> None:
    start = time.monotonic()
    proc = spawn(lossless("prestop", "--sleep", "0.4"))
    assert proc.wait_exit(10) == 0
    assert time.monotonic() - start >= 0.4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to do"),
        (["--sleep", "10", "--timeout", "1"], "exceeds --timeout"),
        (["--sleep", "-1"], "must be a finite duration"),
        (["--drain-url", "http://127.0.0.1:1/lossless/drain"], "needs a token"),
        (["--drain-url", "ftp://x", "--token-file", "/etc/hostname"], "must be http://"),
        (["--drain-url", "http://127.0.0.1:1/", "--token-file", "/nonexistent"], "cannot read"),
    ],
)
def test_bad_input_is_a_one_line_error(spawn: Spawn, args: list[str], message: str) -> None:
    proc = spawn(lossless("prestop", *args))
    assert proc.wait_exit(10) == 2
    errors = [line for line in proc.lines if not line.startswith("{")]
    assert len(errors) == 1 and message in errors[0], proc.lines


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("t0k3n\n")
    return path


def _wait_ready(port: int) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("not ready")


def test_drain_url_drains_lossless_run_and_returns_after_the_delay(
    spawn: Spawn, token: Path
) -> None:
    """1. ``lossless run --drain-delay 1`` with an admin token 2. ``lossless prestop
    --drain-url`` on its probe port. Result: readiness 503 at once; prestop returns 0 once the
    delay is over (>= 1 s later); the supervisor sends the stop signal at t0 + D by itself."""
    probe = free_port()
    run = spawn(
        lossless("run", "--drain-delay", "1", "--probe-port", str(probe), "--", "sleep", "30"),
        env={"LOSSLESS_ADMIN_TOKEN_FILE": str(token)},
    )
    _wait_ready(probe)
    start = time.monotonic()
    url = f"http://127.0.0.1:{probe}/lossless/drain"
    pre = spawn(lossless("prestop", "--drain-url", url, "--token-file", str(token)))
    assert pre.wait_exit(10) == 0, pre.stderr()
    waited = time.monotonic() - start
    assert waited >= 1.0, waited  # never before the delay is over (how fast: not a test's job)
    done = pre.event("prestop_drain_done")
    assert done is not None and done["delay_remaining"] == 0 and done["workers"] == 1
    assert run.wait_exit(10) == 143  # sleep died of the stop signal (SIGTERM)
    draining = run.event("draining")
    assert draining is not None and draining["reason"] == "prestop"
    stop = run.event("stop_signal_sent")
    # at t0 + D, not before; the upper bound leaves room for a supervisor waiting for the CPU
    assert stop is not None and 1.0 <= float(str(stop["t_plus"])) < 2.0


def test_drain_url_with_a_wrong_token_fails_and_drains_nothing(
    spawn: Spawn, token: Path, tmp_path: Path
) -> None:
    probe = free_port()
    run = spawn(
        lossless("run", "--probe-port", str(probe), "--", "sleep", "30"),
        env={"LOSSLESS_ADMIN_TOKEN_FILE": str(token)},
    )
    _wait_ready(probe)
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    url = f"http://127.0.0.1:{probe}/lossless/drain"
    pre = spawn(lossless("prestop", "--drain-url", url, "--token-file", str(wrong)))
    assert pre.wait_exit(10) == 1
    errors = [line for line in pre.lines if not line.startswith("{")]
    assert len(errors) == 1 and "401" in errors[0], pre.lines
    assert run.event("draining") is None


def test_drain_url_unreachable_fails_fast(spawn: Spawn, token: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/lossless/drain"
    pre = spawn(lossless("prestop", "--drain-url", url, "--token-file", str(token)))
    assert pre.wait_exit(10) == 1
    assert "cannot reach" in pre.stderr()


def _drain_state(port: int, token: Path) -> dict[str, object]:
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(
            "GET",
            "/lossless/drain",
            headers={"Authorization": f"Bearer {token.read_text().strip()}"},
        )
        return dict(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


def test_drain_url_waits_for_every_worker_of_a_server_that_does_not_share_t0(
    spawn: Spawn, token: Path
) -> None:
    """1. plain gunicorn with 2 UvicornWorkers and ``--reuse-port`` (each worker has its own
    listener, so the kernel spreads connections over both), the middleware in each (each worker
    drains on its own: nothing shares t0 without ``lossless run``) 2. ``lossless prestop
    --drain-url``. Result: prestop never takes a worker that is not draining for done (it
    drains it too); when it returns, every worker is draining and past its delay."""
    import os
    import sys

    from tests.runtime.conftest import HERE, ROOT

    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    spawn(
        [
            f"{bin_dir}/gunicorn",
            "-k",
            "uvicorn.workers.UvicornWorker",
            "-w",
            "2",
            "--reuse-port",
            "-b",
            f"127.0.0.1:{port}",
            "framework_apps:server_app",
        ],
        env={
            "LOSSLESS_ADMIN_TOKEN_FILE": str(token),
            "LOSSLESS_DRAIN_DELAY": "2",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), str(HERE)]),
        },
    )
    _wait_ready(port)
    url = f"http://127.0.0.1:{port}/lossless/drain"
    pre = spawn(lossless("prestop", "--drain-url", url, "--token-file", str(token)))
    assert pre.wait_exit(20) == 0, pre.stderr()
    states: dict[object, dict[str, object]] = {}
    for _ in range(400):  # fresh connections until both workers answered
        state = _drain_state(port, token)
        states[state["pid"]] = state
        if len(states) == 2:
            break
    assert len(states) == 2
    for state in states.values():
        assert state["draining"] is True and state["delay_remaining"] == 0, states
