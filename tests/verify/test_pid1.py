"""PID 1 signal rules and the stop signal (issue 15, items 2 and 3).

pid_namespaces(7): a signal sent to a namespace's init from an ancestor namespace is delivered
only if init installed a handler for it; SIGKILL and SIGSTOP are forced. The container runtime
sends the image's STOPSIGNAL (or the pod's ``lifecycle.stopSignal``), SIGTERM by default.
Each case runs with a real PID namespace (``unshare``, when this machine allows it) and with the
emulation that reads ``SigCgt`` from /proc/PID/status.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.lab.pod import PodTemplate
from lossless.verify.lab.process import (
    ReplicaProcess,
    handles_signal,
    parse_signal,
    pid1_mode,
)
from lossless.verify.model import EventKind
from tests.conftest import default_sigint
from tests.verify.conftest import PYTHON, lab_session

MODES = ["emulated", pytest.param("namespace", id="namespace")]

# An HTTP server on $PORT. HANDLE=SIGQUIT (or any name) installs an exiting handler for that
# signal only; without HANDLE it installs none (like many servers and every shell).
SERVER = textwrap.dedent(
    """
    import os, signal
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    if os.environ.get("HANDLE"):
        signal.signal(getattr(signal, os.environ["HANDLE"]), lambda *a: os._exit(0))
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *args):
            pass
    print("serving", flush=True)
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
    """
)


def _mode(mode: str) -> str:
    if mode == "namespace" and pid1_mode("auto") != "namespace":
        pytest.skip("no PID namespace here (unshare --pid needs CAP_SYS_ADMIN)")
    return mode


@pytest.fixture
def server(tmp_path: Path) -> Path:
    path = tmp_path / "pid1_server.py"
    path.write_text(SERVER)
    return path


def _at_grace(after_sigterm: float, grace: float) -> None:
    """SIGKILL came ``grace`` seconds after SIGTERM: never earlier, and at most 0.6 s later (a
    timer fires late when a loaded machine holds the loop; ±0.4 s failed that way)."""
    assert grace - 0.02 <= after_sigterm <= grace + 0.6, after_sigterm


async def _connects(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


def test_handles_signal_reads_the_caught_mask() -> None:
    """Table: what /proc/PID/status (SigCgt, SigBlk, SigIgn) says for real processes."""
    cases = [
        ("import signal, time; signal.signal(signal.SIGTERM, lambda *a: 0); "
         "print(1, flush=True); time.sleep(30)", signal.SIGTERM, True),
        ("import time; print(1, flush=True); time.sleep(30)", signal.SIGTERM, False),
        ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print(1, flush=True); time.sleep(30)", signal.SIGTERM, False),  # ignored: dropped too
        ("import time; print(1, flush=True); time.sleep(30)", signal.SIGINT, True),  # Python's
        # blocked and collected with sigtimedwait (lossless run): queued, so taken
        ("import signal; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
         "print(1, flush=True); signal.sigtimedwait({signal.SIGTERM}, 30)", signal.SIGTERM, True),
        # blocked and read from a signalfd (glibc's signalfd through ctypes): taken
        ("import ctypes, signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
         "m = (ctypes.c_ulong * 16)(1 << 14); "
         "assert ctypes.CDLL(None).signalfd(-1, ctypes.byref(m), 0) >= 0; "
         "print(1, flush=True); time.sleep(30)", signal.SIGTERM, True),
        # blocked with the default action: a container init discards it when it unblocks it
        ("import signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
         "print(1, flush=True); time.sleep(30)", signal.SIGTERM, False),
    ]  # fmt: skip
    for code, sig, expected in cases:
        with subprocess.Popen(
            [PYTHON, "-c", code], stdout=subprocess.PIPE, preexec_fn=default_sigint
        ) as proc:
            try:
                assert proc.stdout is not None and proc.stdout.readline()
                assert handles_signal(proc.pid, sig) is expected, code
            finally:
                proc.kill()
    assert handles_signal(2**22 + 7, signal.SIGTERM) is None  # no such process


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_without_a_handler_is_dropped_until_sigkill(
    tmp_path: Path, server: Path, mode: str
) -> None:
    """1. a server with no SIGTERM handler, grace 3 s 2. deleted at t0
    Result: SIGTERM at t0 is not delivered (the event says so), the server keeps accepting
    connections, and SIGKILL stops it at t0 + 3 s."""
    mode = _mode(mode)

    async def main() -> None:
        async with lab_session(tmp_path, pid1=mode) as run:
            pod = await run.lab.create(PodTemplate((PYTHON, str(server)), grace=3), "v1-0")
            async with asyncio.timeout(10):
                await pod.listening.wait()
            run.lab.delete(pod)
            async with asyncio.timeout(5):
                while not run.times(EventKind.SIGTERM, "v1-0"):
                    await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)
            assert not pod.exited.is_set()
            assert await _connects(pod.port)  # still serving after SIGTERM
            await pod.exited.wait()
            sigterm = next(e for e in run.events if e.kind is EventKind.SIGTERM)
            assert "not delivered" in sigterm.detail and "PID 1" in sigterm.detail
            _at_grace(run.first(EventKind.SIGKILL, "v1-0") - sigterm.t, 3.0)
            assert not run.times(EventKind.LISTENER_CLOSED, "v1-0") or (
                run.first(EventKind.LISTENER_CLOSED, "v1-0") >= run.first(EventKind.SIGKILL, "v1-0")
            )

    asyncio.run(main())


@pytest.mark.parametrize("mode", MODES)
def test_lossless_run_as_pid1_takes_sigterm(tmp_path: Path, server: Path, mode: str) -> None:
    """``lossless run`` blocks SIGTERM and collects it with ``sigtimedwait`` (no handler in
    ``SigCgt``): as PID 1 the kernel still queues it for it. 1. ``lossless run --drain-delay
    0.5 -- server`` (the server has no handler), grace 10 s 2. deleted at t0. Result: SIGTERM
    delivered, the server stopped at t0 + 0.5 s by lossless run, the pod gone long before the
    SIGKILL at t0 + 10 s (the lab used to drop it in emulated mode: a correct setup killed at
    the end of its grace period)."""
    mode = _mode(mode)
    lossless_bin = str(Path(sys.executable).parent / "lossless")
    argv = (lossless_bin, "run", "--drain-delay", "0.5", "--", PYTHON, str(server))

    async def main() -> None:
        async with lab_session(tmp_path, pid1=mode) as run:
            pod = await run.lab.create(PodTemplate(argv, grace=10), "v1-0")
            async with asyncio.timeout(15):
                await pod.listening.wait()
            run.lab.delete(pod)
            async with asyncio.timeout(8):
                await pod.exited.wait()
            sigterm = next(e for e in run.events if e.kind is EventKind.SIGTERM)
            assert "not delivered" not in sigterm.detail, sigterm.detail
            assert not run.times(EventKind.SIGKILL, "v1-0")

    asyncio.run(main())


@pytest.mark.parametrize("mode", MODES)
def test_a_shell_that_does_not_exec_keeps_its_child_serving(
    tmp_path: Path, server: Path, mode: str
) -> None:
    """1. ``sh -c 'python server.py; echo stopped'`` (the shell stays PID 1, installs no
    SIGTERM handler) 2. deleted, grace 3 s
    Result: the child serves until SIGKILL at t0 + 3 s; the shell never prints "stopped"."""
    mode = _mode(mode)

    async def main() -> None:
        async with lab_session(tmp_path, pid1=mode) as run:
            command = ("sh", "-c", f"{PYTHON} {server}; echo stopped")
            pod = await run.lab.create(PodTemplate(command, grace=3), "v1-0")
            async with asyncio.timeout(10):
                await pod.listening.wait()
            run.lab.delete(pod)
            await asyncio.sleep(1.5)
            assert await _connects(pod.port)
            await pod.exited.wait()
            sigterm = run.first(EventKind.SIGTERM, "v1-0")
            _at_grace(run.first(EventKind.SIGKILL, "v1-0") - sigterm, 3.0)
        log = (tmp_path / "logs" / "v1-0.log").read_text()
        assert "stopped" not in log

    asyncio.run(main())


@pytest.mark.parametrize("mode", MODES)
def test_the_stop_signal_is_what_the_image_says(tmp_path: Path, server: Path, mode: str) -> None:
    """1. a server that exits on SIGQUIT only (nginx's STOPSIGNAL) 2. stop signal SIGQUIT
    Result: it exits at once (exit 0), no SIGKILL; with SIGTERM it would run to the grace."""
    mode = _mode(mode)

    async def main() -> None:
        async with lab_session(tmp_path, pid1=mode) as run:
            template = PodTemplate(
                (PYTHON, str(server)),
                env={"HANDLE": "SIGQUIT"},
                grace=10,
                stop_signal=signal.SIGQUIT,
            )
            pod = await run.lab.create(template, "v1-0")
            async with asyncio.timeout(10):
                await pod.listening.wait()
            run.lab.delete(pod)
            async with asyncio.timeout(5):
                await pod.exited.wait()
            sigterm = next(e for e in run.events if e.kind is EventKind.SIGTERM)
            assert sigterm.detail.startswith("SIGQUIT") and "not delivered" not in sigterm.detail
            assert not run.times(EventKind.SIGKILL, "v1-0")
            assert pod.returncode == 0

    asyncio.run(main())


def test_plain_process_semantics_for_the_naive_baseline(tmp_path: Path, server: Path) -> None:
    """``pid1=False`` (a process on a VM): SIGTERM's default action kills the server at once."""

    async def main() -> None:
        async with lab_session(tmp_path) as run:
            pod = await run.lab.create(PodTemplate((PYTHON, str(server)), pid1=False), "v1-0")
            async with asyncio.timeout(10):
                await pod.listening.wait()
            run.lab.delete(pod)
            async with asyncio.timeout(2):
                await pod.exited.wait()
            assert pod.returncode == -signal.SIGTERM
            assert not run.times(EventKind.SIGKILL, "v1-0")

    asyncio.run(main())


def test_namespace_mode_reports_the_namespace_init(tmp_path: Path) -> None:
    if pid1_mode("auto") != "namespace":
        pytest.skip("no PID namespace here")

    async def main() -> None:
        process = ReplicaProcess(
            ["sh", "-c", "echo $$; sleep 30"],
            env={"PATH": "/usr/bin:/bin"},
            cwd=None,
            log_path=tmp_path / "p.log",
            pid1="namespace",
        )
        await process.start()
        try:
            async with asyncio.timeout(5):
                while not (tmp_path / "p.log").read_text().strip():
                    await asyncio.sleep(0.01)
            assert (tmp_path / "p.log").read_text().split()[0] == "1"  # PID 1 inside
            assert process.pid != process.pgid
            assert process.stop(signal.SIGTERM) == "dropped"
            await asyncio.sleep(0.2)
            assert process.returncode is None
        finally:
            process.kill()
            await process.wait()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("text", "expected"),
    [("SIGQUIT", signal.SIGQUIT), ("quit", signal.SIGQUIT), ("15", signal.SIGTERM),
     ("SIGWINCH", signal.SIGWINCH)],
)  # fmt: skip
def test_parse_signal(text: str, expected: signal.Signals) -> None:
    assert parse_signal(text) is expected


def test_bad_signal_is_one_line() -> None:
    with pytest.raises(LosslessError, match="unknown signal 'SIGNOPE'"):
        parse_signal("SIGNOPE")


@pytest.mark.slow
def test_a_non_exec_shell_is_blamed_for_the_right_cause(tmp_path: Path) -> None:
    """uvicorn under ``sh -c`` without ``exec``: in a pod SIGTERM never reaches uvicorn, which
    serves its pinned keep-alive connections until SIGKILL cuts the requests in flight. The
    cause is "killed ... the stop signal never reached the server", not "listener closed"."""
    from tests.verify.conftest import assert_nothing_left, load_json, run_cli

    out = tmp_path / "shell"
    cmd = f"sh -c '{PYTHON} -m uvicorn examples.app:app --host 127.0.0.1 --port $PORT; echo done'"
    result = run_cli(
        "verify", "--cmd", cmd, "--env", "EXAMPLE_MAX_WORK=0.5", "--replicas", "2",
        "--rate", "60", "--before", "1", "--after", "0.5", "--grace-period", "4",
        "--max-surge", "1", "--max-unavailable", "0", "--readiness-path", "/readyz",
        "--readiness-period", "0.5", "--new-conn-ratio", "0", "--out", str(out), "--json",
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert result.returncode == 1, result.stderr
    kinds = [c["kind"] for c in doc["causes"]]
    assert kinds[0] == "killed", doc["causes"]
    assert "listener_closed" not in kinds
    assert "never reached the server" in doc["causes"][0]["cause"]
    assert "exec" in doc["causes"][0]["fix"]
    assert_nothing_left(out)
