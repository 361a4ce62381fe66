"""Scenario 6 of the runtime issue: readiness follows startup hooks and critical checks; optional
checks never fail it; a hanging check is cut by its timeout and probes stay fast."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from tests.runtime.conftest import Server

SERVERS = ["uvicorn", "gunicorn"]


def _wait_status(server: Server, path: str, status: int, timeout: float = 10) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if server.get(path)[0] == status:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{path} never answered {status}: {server.stderr()}")


@pytest.mark.parametrize("kind", SERVERS)
def test_readiness_waits_for_startup_hooks(serve, kind: str) -> None:
    """uvicorn runs startup (lifespan) before it listens: probes are refused until then;
    gunicorn workers listen at once and answer 503 (startupz too) until the hooks are done."""
    started = time.monotonic()
    # one worker: with two, consecutive probes may reach workers a few ms apart in their startup
    extra = ["--workers", "1"] if kind == "gunicorn" else []
    server = serve(kind, *extra, env={"APP_STARTUP_SLEEP": "1.5"})
    answers = set()
    startup: list[int] = []  # /startupz right after each not-ready /readyz
    while time.monotonic() - started < 20:
        try:
            status, _h, body = server.get("/readyz?verbose")
        except ConnectionRefusedError:
            answers.add("refused")
            time.sleep(0.02)
            continue
        if status == 200:
            break
        answers.add(status)
        assert b"[-]startup failed: startup hooks running" in body
        # the hooks may end between the two probes: then readiness is 200 on the next turn
        startup.append(server.get("/startupz")[0])
        assert server.get("/livez")[0] == 200
        time.sleep(0.02)
    assert time.monotonic() - started >= 1.5
    assert answers <= {"refused", 503}
    assert set(startup) <= {503, 200} and 200 not in startup[:-1], startup  # 200: hooks done
    if kind == "gunicorn":
        assert 503 in answers and 503 in startup
    # each gunicorn worker runs its own hooks: the second one may finish a moment later
    _wait_status(server, "/startupz", 200, timeout=2)


@pytest.mark.parametrize("kind", SERVERS)
def test_readiness_follows_a_critical_check(serve, kind: str, tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    server = serve(kind, "--drain-delay", "0", env={"APP_READY_FILE": str(flag)})
    server.wait_listening()
    time.sleep(0.5)
    status, _h, body = server.get("/readyz?verbose")
    assert status == 503 and b"[-]ready_file failed:" in body
    flag.touch()
    _wait_status(server, "/readyz", 200, timeout=5)
    flag.unlink()
    _wait_status(server, "/readyz", 503, timeout=5)  # readiness keeps following the check


@pytest.mark.parametrize("kind", SERVERS)
def test_failing_optional_check_leaves_readiness_ok(serve, kind: str) -> None:
    # one worker: with two, a probe may reach the second one before it is ready
    extra = ["--workers", "1"] if kind == "gunicorn" else []
    server = serve(kind, *extra, env={"APP_OPTIONAL_FAIL": "1"})
    server.wait_ready()
    # ready does not wait for an optional check: its first result may still be on its way
    end = time.monotonic() + 10
    while b"(optional): pending" in (body := server.get("/readyz?verbose")[2]):
        assert time.monotonic() < end, body
        time.sleep(0.02)
    status, _h, body = server.get("/readyz?verbose")
    assert status == 200
    assert b"[-]cache failed (optional): ConnectionError: cache unreachable" in body
    assert body.endswith(b"readyz check passed\n")
    status, headers, body = server.get("/readyz", {"Accept": "application/health+json"})
    doc = json.loads(body)
    assert headers["content-type"] == "application/health+json"
    assert doc["status"] == "pass" and doc["checks"]["cache"][0]["status"] == "warn"


@pytest.mark.parametrize("kind", SERVERS)
def test_hanging_check_is_cut_and_probes_stay_fast(serve, kind: str) -> None:
    """A critical check that hangs (timeout 2 s) is reported as timed out, and probes answer from
    the checker's latest results: a probe that waited for the check would take its 2 s timeout;
    these take a fraction of it (median under 1 s, a bound a loaded machine cannot break)."""
    extra = ["--workers", "1"] if kind == "gunicorn" else []  # the same worker's checker
    server = serve(kind, *extra, env={"APP_HANG_CHECK": "critical", "APP_HANG_TIMEOUT": "2"})
    server.wait_listening()
    conn = server.connection()
    end = time.monotonic() + 20  # the first round: the check's 2 s timeout, after startup
    while True:
        conn.request("GET", "/readyz?verbose")
        body = conn.getresponse().read()
        if b"[-]hangs failed: timeout" in body:
            break
        assert b"[-]hangs failed: pending" in body and time.monotonic() < end, body
        time.sleep(0.05)
    timings = []
    for _ in range(15):
        start = time.perf_counter()
        conn.request("GET", "/readyz?verbose")
        resp = conn.getresponse()
        body = resp.read()
        timings.append(time.perf_counter() - start)
        assert resp.status == 503
        assert b"[-]hangs failed: timeout" in body
    conn.close()
    assert statistics.median(timings) < 1.0, timings


def test_check_output_is_withheld_from_remote_callers() -> None:
    from lossless import probe_render as probes
    from lossless.lifecycle import Lifecycle
    from lossless.settings import Settings

    lc = Lifecycle(Settings(drain_delay=0))

    @lc.check("db")
    def db() -> None:
        raise RuntimeError("password=hunter2 rejected")

    lc.startup_sync()  # starts the background checker, whose first call may still run:
    deadline = time.monotonic() + 5  # wait for the check's own result (bounded)
    while (
        b"RuntimeError"
        not in (local := probes.answer(lc, "readyz", query="verbose", client="127.0.0.1")).body
    ):
        assert time.monotonic() < deadline, local.body
        time.sleep(0.02)
    remote = probes.answer(lc, "readyz", query="verbose", client="10.1.2.3")
    assert b"hunter2" in local.body
    assert b"hunter2" not in remote.body and b"reason withheld" in remote.body
    lc.health.stop()


@pytest.mark.parametrize(("kind", "extra"), [("uvicorn", []), ("gunicorn", ["--preload"])])
def test_on_ready_runs_once_per_instance(
    serve, kind: str, extra: list[str], tmp_path: Path
) -> None:
    """Instance-level callbacks (discovery registration) registered at import run once, in the
    process that receives SIGTERM: the uvicorn process, or the gunicorn master (which imported
    the app: ``--preload``) once a worker answers ready."""
    marker = tmp_path / "ready"
    server = serve(kind, *extra, env={"APP_READY_MARKER": str(marker)})
    server.wait_ready()
    end = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert marker.exists(), server.stderr()
    time.sleep(1.5)  # give a wrongly registered worker the time to write too
    assert marker.read_text().split() == [str(server.proc.pid)]


def test_on_ready_runs_in_each_worker_without_preload(serve, tmp_path: Path) -> None:
    """Without ``--preload`` the master never imports the app: each worker is an app instance
    of its own and runs the callbacks it registered (docs/runtime.md)."""
    marker = tmp_path / "ready"
    server = serve("gunicorn", env={"APP_READY_MARKER": str(marker)})
    server.wait_ready()
    end = time.monotonic() + 10
    while (not marker.exists() or len(marker.read_text().split()) < 2) and time.monotonic() < end:
        time.sleep(0.05)
    pids = marker.read_text().split()
    assert len(set(pids)) == 2 and str(server.proc.pid) not in pids


@pytest.mark.parametrize("kind", SERVERS)
def test_metrics_path_serves_prometheus_text(serve, kind: str) -> None:
    extra = ["--workers", "1"] if kind == "gunicorn" else []  # metrics are per worker
    server = serve(kind, "--metrics-path", "/metrics", *extra)
    server.wait_ready()
    status, headers, body = server.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b'lossless_state{state="ready"} 1.0' in body
    assert b"lossless_in_flight_requests 0.0" in body


def test_metrics_are_off_by_default(serve) -> None:
    server = serve("uvicorn")
    server.wait_ready()
    _status, _h, body = server.get("/metrics")
    assert body == b"hello"  # the app's own route: nothing intercepted
