"""Servers other than ``lossless serve`` under ``lossless run`` + the middleware: hypercorn,
granian, daphne and gunicorn with UvicornWorker. ``lossless run`` shares its drain state with
every descendant (``LOSSLESS_DRAIN_STATE``), so each worker of the child server sees t0 at once.
"""

from __future__ import annotations

import http.client
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.runtime.conftest import HERE, ROOT
from tests.supervise._proc import Proc, lossless, spawn

__all__ = ["spawn"]

Spawn = Callable[..., Proc]
BIN = os.path.dirname(sys.executable)
APP = "framework_apps:server_app"

#: name -> (command for a port, worker processes)
SERVERS: dict[str, tuple[Callable[[int], list[str]], int]] = {
    "hypercorn": (
        lambda port: [f"{BIN}/hypercorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", APP],
        2,
    ),
    "granian": (
        lambda port: [
            f"{BIN}/granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
            APP,
        ],
        2,
    ),
    "daphne": (lambda port: [f"{BIN}/daphne", "-b", "127.0.0.1", "-p", str(port), APP], 1),
    "gunicorn-uvicornworker": (
        lambda port: [
            f"{BIN}/gunicorn",
            "-k",
            "uvicorn.workers.UvicornWorker",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            APP,
        ],
        2,
    ),
}


def _env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), str(HERE)])}


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _wait_status(proc: Proc, port: int, path: str, status: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.proc.poll() is not None:
            raise AssertionError(f"exited early:\n{proc.stderr()}")
        try:
            if _get(port, path)[0] == status:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path} never answered {status}:\n{proc.stderr()}")


def _pids_until(
    port: int, workers: int, check: Callable[[int, dict[str, str]], None], timeout: float
) -> set[str]:
    """GET ``/`` on fresh connections until ``workers`` distinct pids answered or ``timeout``
    seconds passed, calling ``check(status, headers)`` on each answer."""
    pids: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < workers and time.monotonic() < deadline:
        status, headers, _body = _get(port, "/")
        check(status, headers)
        pids.add(headers["x-pid"])
    return pids


@pytest.mark.parametrize("name", list(SERVERS))
def test_every_worker_drains_under_lossless_run(spawn: Spawn, name: str) -> None:
    """1. ``lossless run --drain-delay 6 -- SERVER`` serving the middleware-wrapped app, with
    several workers where the server has them 2. SIGTERM to ``lossless run``. Result: during D,
    every worker answers ``/readyz`` 503 and every response carries ``Connection: close``, the
    server keeps serving, and it gets its stop signal only at t0 + D; exit 0. (D leaves room for
    4 s of requests until every worker answered, on a loaded machine.)"""
    command, workers = SERVERS[name]
    port = free_port()
    run = spawn(
        lossless("run", "--drain-delay", "6", "--shutdown-timeout", "15", "--", *command(port)),
        env=_env(),
    )
    _wait_status(run, port, "/readyz", 200)

    def open_connection(status: int, headers: dict[str, str]) -> None:
        assert status == 200 and headers.get("connection") != "close"

    # every worker booted: the first one answers /readyz while the others may still import
    assert len(_pids_until(port, workers, open_connection, timeout=30)) == workers
    run.signal()
    run.wait_event("draining")

    def closing(status: int, headers: dict[str, str]) -> None:
        assert status == 200 and headers.get("connection") == "close", headers

    seen = _pids_until(port, workers, closing, timeout=4)  # inside D = 6 s
    assert len(seen) == workers, f"only {seen} answered during D"
    for _ in range(4 * workers):
        assert _get(port, "/readyz")[0] == 503
    assert run.event("stop_signal_sent") is None, "the checks above ran past t0 + D"
    sent = run.wait_event("stop_signal_sent")
    assert float(str(sent["t_plus"])) >= 6.0
    assert run.wait_exit(20) == 0, run.stderr()


def test_middleware_alone_logs_its_transitions(spawn: Spawn) -> None:
    """Plain uvicorn (no ``lossless serve``, no logging set up by the app): the middleware logs
    the start of the lifespan startup, ``starting``, ``ready`` and, on a drain, ``draining`` as
    JSON lines on stderr."""
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "uvicorn", "--port", str(port), "--log-level", "warning", APP],
        env=_env(),
    )
    _wait_status(proc, port, "/readyz", 200)
    proc.wait_event("ready")  # the line may reach us a moment after the probe's answer
    names = [e["event"] for e in proc.events()]
    assert names[:3] == ["lifespan_startup", "starting", "ready"], proc.stderr()
    assert all(line.startswith("{") for line in proc.lines if '"event"' in line)


def test_liveness_does_not_fail_on_a_check_not_run_yet() -> None:
    """A liveness check registered but not evaluated yet (the event loop check just after a
    worker starts) passes: liveness failures restart the container."""
    from lossless import probe_render
    from lossless.lifecycle import Lifecycle
    from lossless.settings import Settings

    lc = Lifecycle(Settings(drain_delay=0))
    lc.add_check("event_loop", lambda: "ok", liveness=True)
    answer = probe_render.answer(lc, "livez", query="verbose", client="127.0.0.1")
    assert answer.status == 200 and b"[+]event_loop ok: pending" in answer.body
    readiness = probe_render.answer(lc, "readyz", query="verbose", client="127.0.0.1")
    assert readiness.status == 503


def _rollout(spawn: Spawn, cmd: str, out: str) -> dict[str, object]:
    """``lossless verify``'s summary of one conclusive run. An inconclusive one (exit 3: its
    load generator, waiting for the CPU, sent too many requests late to judge) with no failure
    is run again, once: it measured nothing either way. A failure is never retried."""
    summary = _rollout_once(spawn, cmd, out + "/1")
    if summary["exit"] == 3 and summary["failures"] == 0:
        summary = _rollout_once(spawn, cmd, out + "/2")
    return summary


def _rollout_once(spawn: Spawn, cmd: str, out: str) -> dict[str, object]:
    import json

    proc = spawn(
        lossless(
            "verify", "--cmd", cmd, "--replicas", "2", "--propagation-delay", "0.5",
            "--rate", "50", "--before", "0.5", "--after", "0.5", "--readiness-path", "/readyz",
            "--out", out, "--json", "-q",
        ),
        env=_env(),
    )  # fmt: skip
    code = proc.wait_exit(120)
    try:
        summary: dict[str, object] = json.loads("\n".join(proc.out))
    except ValueError:
        pytest.fail(f"lossless verify printed no JSON (exit {code}):\n{proc.stderr()}")
    summary["exit"] = code
    return summary


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hypercorn", "granian", "gunicorn-uvicornworker"])
def test_rolling_update_under_lossless_run_drops_nothing(
    spawn: Spawn, name: str, tmp_path: object
) -> None:
    """1. a rolling update of 2 replicas, each ``lossless run --drain-delay 3 -- SERVER`` with
    2 workers and the middleware, 50 rps mostly on keep-alive connections (``lossless verify``'s
    default: 10 % fresh), endpoint removal propagating in 0.5 s: kube-proxy's worst case, 0.5 s
    + 1 s to its next sync, inside D with 1.5 s to spare (with D = 2 s, 0.5 s: less than a
    verifier waiting for the CPU may lose on a loaded machine). Result: 0 failures, exit 0."""
    import shlex

    command, _workers = SERVERS[name]
    server = " ".join(shlex.quote(a) for a in command(0)).replace("127.0.0.1:0", "127.0.0.1:{port}")
    server = server.replace("--port 0", "--port {port}")
    run = " ".join(shlex.quote(a) for a in lossless("run", "--drain-delay", "3", "--"))
    summary = _rollout(spawn, f"{run} {server}", str(tmp_path))
    assert summary["failures"] == 0 and summary["exit"] == 0, summary
    assert int(str(summary["requests"])) > 100


def test_workers_run_their_own_drain_hooks(spawn: Spawn, tmp_path: Path) -> None:
    """1. hypercorn with 2 workers under ``lossless run``, each worker's app registering an
    ``on_drain`` hook 2. SIGTERM to ``lossless run``. Result: each worker runs its hook once
    (the drain started in the supervisor, not in the worker)."""
    marker = tmp_path / "drained"
    command, workers = SERVERS["hypercorn"]
    port = free_port()
    run = spawn(
        lossless("run", "--drain-delay", "2", "--", *command(port)),
        env={**_env(), "APP_DRAIN_MARKER": str(marker)},
    )
    _wait_status(run, port, "/readyz", 200)
    assert len(_pids_until(port, workers, lambda status, headers: None, timeout=30)) == workers
    run.signal()
    end = time.monotonic() + 10
    while time.monotonic() < end and len(_lines(marker)) < workers:
        time.sleep(0.02)
    assert len(set(_lines(marker))) == workers == len(_lines(marker))
    assert run.wait_exit(20) == 0, run.stderr()


def test_a_drain_started_by_the_app_drains_the_server_and_the_supervisor(spawn: Spawn) -> None:
    """1. granian with 2 workers under ``lossless run --drain-delay 5`` 2. the app calls
    ``drain()`` in one worker (``GET /drain``). Result: every worker turns ``/readyz`` 503,
    ``lossless run`` notices (``draining``, reason "drain started by another process"), sends the
    stop signal at t0 + D and exits 0."""
    command, workers = SERVERS["granian"]
    port = free_port()
    # D = 5 s: the requests below, until both workers answered, must land inside it
    run = spawn(lossless("run", "--drain-delay", "5", "--", *command(port)), env=_env())
    _wait_status(run, port, "/readyz", 200)
    # every worker booted: the first one answers /readyz while the others may still import
    assert len(_pids_until(port, workers, lambda status, headers: None, timeout=30)) == workers
    assert _get(port, "/drain")[0] == 200

    def closing(status: int, headers: dict[str, str]) -> None:
        assert status == 200 and headers.get("connection") == "close", headers

    seen = _pids_until(port, workers, closing, timeout=3)  # inside D = 5 s
    assert len(seen) == workers, f"only {seen} answered during D"
    assert run.event("stop_signal_sent") is None, "the checks above ran past t0 + D"
    end = time.monotonic() + 10
    mine: list[dict[str, object]] = []
    while not mine and time.monotonic() < end:  # the supervisor's event (workers log theirs)
        mine = [e for e in run.events() if e["event"] == "draining" and e["pid"] == run.pid]
        time.sleep(0.02)
    assert mine and mine[0]["reason"] == "drain started by another process", run.stderr()
    sent = run.wait_event("stop_signal_sent")
    assert float(str(sent["t_plus"])) >= 5.0
    assert run.wait_exit(20) == 0, run.stderr()


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_aiohttp_recipe_under_lossless_run(spawn: Spawn) -> None:
    """1. an aiohttp app with the recipe's middleware, under ``lossless run --drain-delay 4
    --probe-port`` 2. SIGTERM. Result: ``lossless run``'s ``/readyz`` turns 503, the app keeps
    serving with ``Connection: close`` through D, gets SIGTERM at t0 + D and exits 0."""
    port, probe = free_port(), free_port()
    run = spawn(
        lossless(
            "run", "--drain-delay", "4", "--probe-port", str(probe), "--port", str(port),
            "--health-url", "/", "--", sys.executable, str(HERE / "aiohttp_app.py"), str(port),
        ),
        env=_env(),
    )  # fmt: skip
    _wait_status(run, probe, "/readyz", 200)
    status, headers, _b = _get(port, "/")
    assert status == 200 and headers.get("connection") != "close"
    run.signal()
    run.wait_event("draining")
    assert _get(probe, "/readyz")[0] == 503
    status, headers, _b = _get(port, "/")
    assert status == 200 and headers.get("connection") == "close"
    assert run.event("stop_signal_sent") is None, "the checks above ran past t0 + D"
    assert float(str(run.wait_event("stop_signal_sent")["t_plus"])) >= 4.0
    assert run.wait_exit(20) == 0, run.stderr()
