"""``lossless run`` on real children, real signals and real sockets. Each scenario is numbered:
what is done, then what must happen."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.supervise._proc import Proc, alive, lossless, zombies_of

Spawn = Callable[..., Proc]
PY = sys.executable

# A child that reports the signals it gets on stdout; SIGHUP makes it exit 7.
REPORTER = """
import signal, sys, time
def on(sig, frame):
    print(signal.Signals(sig).name, flush=True)
    if sig == signal.SIGHUP:
        sys.exit(7)
for s in (signal.SIGUSR1, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, on)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""

# A child that ignores SIGTERM (many vendor binaries and shell loops do).
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""

WRAPPERS: dict[str, Callable[[list[str]], list[str]]] = {
    "lossless": lambda cmd: lossless("run", "--", *cmd),
    "tini": lambda cmd: ["tini", "-s", "--", *cmd],
    "dumb-init": lambda cmd: ["dumb-init", *cmd],
}


def _wrapper(name: str) -> Callable[[list[str]], list[str]]:
    # tini and dumb-init are in .ci/debian-packages: missing is a setup defect, not a skip
    assert name == "lossless" or shutil.which(name), f"{name} is not installed (make setup)"
    return WRAPPERS[name]


def _get(port: int, path: str = "/") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _wait_status(port: int, path: str, status: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < end:
        try:
            last = _get(port, path)
            if last == status:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"GET {path} on {port}: wanted {status}, last {last!r}")


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# -- exit codes and signals: parity with tini and dumb-init -------------------------------------
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_1_exit_code_of_the_child_propagates(spawn: Spawn, wrapper: str) -> None:
    """1. the child exits 3 by itself. Result: the wrapper exits 3 (like tini and dumb-init)."""
    proc = spawn(_wrapper(wrapper)(["sh", "-c", "exit 3"]))
    assert proc.wait_exit() == 3


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_2_child_killed_by_a_signal_gives_128_plus_n(spawn: Spawn, wrapper: str) -> None:
    """1. the child SIGKILLs itself. Result: exit 137 for every wrapper."""
    proc = spawn(_wrapper(wrapper)(["sh", "-c", "kill -KILL $$"]))
    assert proc.wait_exit() == 137


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_3_sigterm_reaches_the_child(spawn: Spawn, wrapper: str) -> None:
    """1. SIGTERM to the wrapper (no drain delay) 2. the child dies of it. Result: exit 143."""
    proc = spawn(_wrapper(wrapper)(["sh", "-c", "echo ready; exec sleep 30"]))
    proc.wait_output("ready")
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit(10) == 143


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_4_other_signals_are_forwarded(spawn: Spawn, wrapper: str) -> None:
    """1. SIGUSR1 to the wrapper 2. SIGHUP to the wrapper. Result: the child sees both, in
    order; it exits 7 on SIGHUP and so does the wrapper."""
    proc = spawn(_wrapper(wrapper)([PY, "-c", REPORTER]))
    proc.wait_output("ready")
    proc.signal(signal.SIGUSR1)
    proc.wait_output("SIGUSR1")
    proc.signal(signal.SIGHUP)
    assert proc.wait_exit(10) == 7
    assert [line for line in proc.out if line.startswith("SIG")] == ["SIGUSR1", "SIGHUP"]


# -- the drain sequence -------------------------------------------------------------------------
def test_5_child_ignoring_sigterm_is_killed_at_the_deadline(spawn: Spawn) -> None:
    """1. a child that ignores SIGTERM 2. SIGTERM (D = 0.3 s, timeout 1.5 s). Result: it gets
    SIGTERM at t0 + D, SIGKILL at t0 + 1.5 s; exit 137 and a ``forced`` event. (Upper bounds
    leave room for a supervisor that waits for the CPU; each stays short of the next step.)"""
    proc = spawn(
        lossless(
            "run", "--drain-delay", "0.3", "--shutdown-timeout", "1.5", "--", PY, "-c", STUBBORN
        )
    )
    proc.wait_output("ready")
    sent_before = time.monotonic()  # t0 is later: lower bounds hold however late we run
    t0 = proc.signal()
    assert proc.wait_exit(10) == 137
    assert proc.exited_at is not None
    assert proc.exited_at - sent_before >= 1.5, proc.exited_at - sent_before
    assert proc.exited_at - t0 <= 1.5 + 3.0, proc.exited_at - t0
    stop = proc.event("stop_signal_sent")
    assert stop is not None and 0.3 <= float(str(stop["t_plus"])) < 1.2, stop  # before the kill
    forced = proc.event("forced")
    assert forced is not None and "deadline" in str(forced["what"]), proc.stderr()
    exited = proc.event("child_exited")
    assert exited is not None and exited["signal"] == "SIGKILL"


def test_6_second_signal_skips_the_delay_third_kills_at_once(spawn: Spawn) -> None:
    """1. a child that ignores SIGTERM, D = 30 s 2. a second SIGTERM 3. a third. Result: the
    stop signal goes out at the second (not at t0 + 30 s), SIGKILL at the third; exit 137.
    Each signal is sent once the previous one was handled: two pending SIGTERMs are one."""
    proc = spawn(
        lossless("run", "--drain-delay", "30", "--shutdown-timeout", "60", "--", PY, "-c", STUBBORN)
    )
    proc.wait_output("ready")
    t0 = proc.signal()
    proc.wait_event("draining")
    proc.signal()
    stop = proc.wait_event("stop_signal_sent", 10)
    assert float(str(stop["t_plus"])) < 10.0
    time.sleep(0.3)
    assert proc.proc.poll() is None  # SIGTERM ignored: still running
    proc.signal()
    assert proc.wait_exit(10) == 137
    assert proc.exited_at is not None and proc.exited_at - t0 < 10.0


def test_7_stop_signal_is_configurable(spawn: Spawn) -> None:
    """1. --stop-signal QUIT (nginx's graceful stop), D = 0.5 s 2. SIGTERM. Result: the child
    gets SIGQUIT (not SIGTERM) after D and its exit code (0 here) propagates."""
    script = REPORTER.replace(
        "sys.exit(7)", "sys.exit(7)\n    if sig == signal.SIGQUIT: sys.exit(0)"
    )
    proc = spawn(
        lossless("run", "--drain-delay", "0.5", "--stop-signal", "QUIT", "--", PY, "-c", script)
    )
    proc.wait_output("ready")
    sent_before = time.monotonic()  # t0 is later: the bound holds however late we run
    proc.signal()
    assert proc.wait_exit(10) == 0
    assert [line for line in proc.out if line.startswith("SIG")] == ["SIGQUIT"]
    assert proc.exited_at is not None and proc.exited_at - sent_before >= 0.5


def test_8_orphans_are_reaped_while_the_child_runs(spawn: Spawn, tmp_path: Path) -> None:
    """1. the child leaves short-lived orphans behind (double fork) 2. they exit. Result: the
    supervisor reaps them (no zombie is left under it), and SIGTERM still works: exit 143.
    (The test waits for the orphans to be gone, not a guessed second: one that exits late
    would be a zombie for the moment before the supervisor reaps it.)"""
    pids = tmp_path / "orphans"
    script = (
        f'(sh -c "sleep 0.1" & echo $! >> {pids}); (sh -c "sleep 0.1" & echo $! >> {pids}); '
        f"(sleep 0.2 & echo $! >> {pids}); exec sleep 30"
    )
    proc = spawn(lossless("run", "--", "sh", "-c", script))
    proc.wait_event("child_started")
    end = time.monotonic() + 10
    while len(orphans := (pids.read_text().split() if pids.exists() else [])) < 3:
        assert time.monotonic() < end, orphans
        time.sleep(0.02)
    # gone from /proc: reaped (a zombie under the supervisor would stay listed)
    while left := [p for p in orphans if os.path.exists(f"/proc/{p}")]:
        assert time.monotonic() < end, f"not reaped: {left}, zombies {zombies_of(proc.pid)}"
        time.sleep(0.02)
    assert zombies_of(proc.pid) == []
    proc.signal()
    assert proc.wait_exit(10) == 143


def test_9_grandchildren_are_stopped_when_the_child_exits(spawn: Spawn, tmp_path: Path) -> None:
    """1. the child starts a grandchild in its group and one that leaves it (setsid) 2. the
    child exits 5 by itself. Result: exit 5; both grandchildren are gone (signalled, reaped)."""
    a, b = tmp_path / "a", tmp_path / "b"
    script = f"sleep 300 & echo $! > {a}; setsid sleep 300 & echo $! > {b}; sleep 0.5; exit 5"
    proc = spawn(lossless("run", "--shutdown-timeout", "3", "--", "sh", "-c", script))
    assert proc.wait_exit(10) == 5
    pids = [int(a.read_text()), int(b.read_text())]
    assert [p for p in pids if alive(p)] == []
    assert proc.event("leftovers_signalled") is not None


def test_10_shell_without_exec_still_stops(spawn: Spawn) -> None:
    """1. ``sh -c 'sleep 300; echo done'`` (a shell that does not exec, so it would never pass
    SIGTERM on) 2. SIGTERM. Result: the whole group gets it; exit at once with 143 (within 5 s
    on a loaded machine; the sleep would last 300 s)."""
    proc = spawn(lossless("run", "--", "sh", "-c", "sleep 300; echo done"))
    proc.wait_event("child_started")
    time.sleep(0.3)
    t0 = proc.signal()
    assert proc.wait_exit(10) == 143
    assert proc.exited_at is not None and proc.exited_at - t0 < 5.0


def test_11_plain_server_keeps_serving_during_the_delay(spawn: Spawn) -> None:
    """1. ``python -m http.server`` (dies at once on SIGTERM) under ``lossless run
    --drain-delay 3`` 2. SIGTERM 3. new connections during D, then after D. Result: /readyz
    answers 503 from t0 while the server still answers 200 on fresh connections until t0 + D;
    then connections are refused; the stop signal went out at t0 + D (not before; within 1 s
    after, a bound a supervisor waiting for the CPU cannot break). The requests stop 1 s short
    of D, so none races the stop signal."""
    port, probe = free_port(), free_port()
    proc = spawn(
        lossless(
            "run",
            "--drain-delay",
            "3",
            "--probe-port",
            str(probe),
            "--probe-host",
            "127.0.0.1",
            "--health-tcp",
            str(port),
            "--",
            PY,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
        )
    )
    _wait_status(probe, "/readyz", 200)
    assert _get(port) == 200
    sent_before = time.monotonic()
    proc.signal()
    proc.wait_event("draining")
    assert _get(probe, "/readyz") == 503
    assert _get(probe, "/livez") == 200
    served = 0
    while time.monotonic() - sent_before < 2.0 or served < 3:
        assert proc.event("stop_signal_sent") is None, "D ended before the requests did"
        assert _get(port) == 200
        served += 1
        time.sleep(0.05)
    assert proc.wait_exit(10) == 143
    assert _refused(port)
    stop = proc.event("stop_signal_sent")
    assert stop is not None
    late = float(str(stop["t_plus"])) - 3.0
    assert 0 <= late < 1.0, f"stop signal {late * 1000:.1f} ms after t0 + D"


def test_12_readiness_follows_the_childs_health(spawn: Spawn, tmp_path: Path) -> None:
    """1. a child that starts listening only once the test says so, --health-url / 2. probe
    before and after. Result: /readyz 503 then 200; /livez 200 throughout; verbose names the
    check. (Not after a fixed 1.5 s: a supervisor slow to start its probes would see it up.)"""
    port, probe = free_port(), free_port()
    go = tmp_path / "go"
    script = f"import os, time, runpy, sys\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)\nsys.argv = ['http.server', '{port}', '--bind', '127.0.0.1']; runpy.run_module('http.server', run_name='__main__')"
    proc = spawn(
        lossless(
            "run",
            "--probe-port",
            str(probe),
            "--port",
            str(port),
            "--health-url",
            "/",
            "--",
            PY,
            "-c",
            script,
        ),
        env={"LOSSLESS_CHECK_INTERVAL": "0.2"},
    )
    _wait_status(probe, "/livez", 200)
    assert _get(probe, "/readyz") == 503
    conn = http.client.HTTPConnection("127.0.0.1", probe, timeout=5)
    conn.request("GET", "/readyz?verbose")
    body = conn.getresponse().read().decode()
    conn.close()
    assert "[-]health_url failed" in body, body
    assert _get(probe, "/livez") == 200
    go.touch()
    _wait_status(probe, "/readyz", 200, timeout=10)
    proc.signal()
    assert proc.wait_exit(10) == 143


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no command given"),
        (["--"], "no command given"),
        (["--", "no-such-command-xyz"], "command not found"),
        (["--stop-signal", "NOPE", "--", "true"], "unknown signal"),
        (["--health-url", "/x", "--", "true"], "give the child's --port"),
        (["--drain-delay", "30", "--", "true"], "must be shorter than"),
        (["--registry", "etcd://127.0.0.1:1/x", "--", "sleep", "30"], "--service-name"),
        (
            ["--registry", "etcd://127.0.0.1:1/x", "--service-name", "s", "--", "sleep", "30"],
            "fixed --port",
        ),
    ],
)
def test_13_bad_input_is_a_one_line_error(spawn: Spawn, args: list[str], message: str) -> None:
    proc = spawn(lossless("run", *args))
    assert proc.wait_exit(10) == 2
    errors = [line for line in proc.lines if not line.startswith("{")]
    assert len(errors) == 1 and message in errors[0], proc.lines
    assert "Traceback" not in proc.stderr()


def test_14_probe_port_taken_is_a_one_line_error(spawn: Spawn) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        proc = spawn(
            lossless(
                "run", "--probe-port", str(port), "--probe-host", "127.0.0.1", "--", "sleep", "30"
            )
        )
        assert proc.wait_exit(10) == 2
    finally:
        holder.close()
    errors = [line for line in proc.lines if not line.startswith("{")]
    assert len(errors) == 1 and f"cannot listen on 127.0.0.1:{port}" in errors[0], proc.lines
    assert proc.event("child_started") is None  # nothing was started


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) not installed")
def test_15_as_pid_1_in_a_new_pid_namespace(spawn: Spawn) -> None:
    """1. ``lossless run`` as PID 1 of a fresh PID namespace (where signals at their default
    disposition are dropped by the kernel) 2. SIGTERM from outside. Result: it is received,
    drained and forwarded as anywhere else: exit 143."""
    probe = spawn(["unshare", "--pid", "--fork", "--kill-child", "true"])
    if probe.wait_exit(10) != 0:
        pytest.skip("cannot create a PID namespace here: " + probe.stderr())
    proc = spawn(
        ["unshare", "--pid", "--fork", "--kill-child", *lossless("run", "--", "sleep", "30")]
    )
    started = proc.wait_event("run")
    assert started["pid"] == 1
    time.sleep(0.2)
    # unshare forwards nothing: signal the supervisor itself, PID 1 inside, a child of unshare.
    inner = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == proc.pid]
    assert inner, "no supervisor under unshare"
    os.kill(inner[0], signal.SIGTERM)
    assert proc.wait_exit(10) == 143


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def test_17_a_stopped_and_continued_supervisor_keeps_supervising(spawn: Spawn) -> None:
    """1. ``lossless run`` (a child that reports its signals) 2. SIGSTOP to the supervisor for
    0.6 s (longer than its longest wait), then SIGCONT 3. SIGHUP. Result: the supervisor is
    still running, forwards SIGCONT and SIGHUP, and exits with the child's code 7; no
    traceback. (Its interrupted wait used to return garbage as a signal number: a crash.)"""
    proc = spawn(lossless("run", "--", PY, "-c", REPORTER))
    proc.wait_output("ready")
    proc.signal(signal.SIGSTOP)
    time.sleep(0.6)  # the length of the stop is the scenario, not a synchronisation
    proc.signal(signal.SIGCONT)
    forwarded = proc.wait_event("signal_forwarded")
    assert forwarded["signal"] == "SIGCONT", proc.stderr()
    assert proc.proc.poll() is None, proc.stderr()
    proc.signal(signal.SIGHUP)
    assert proc.wait_exit(10) == 7, proc.stderr()
    assert "Traceback" not in proc.stderr()


def test_16_child_does_not_outlive_a_killed_supervisor(spawn: Spawn) -> None:
    """1. ``lossless run -- sleep 30`` 2. SIGKILL to the supervisor (no chance to forward).
    Result: the child dies too (parent-death signal), instead of running on as an orphan."""
    proc = spawn(lossless("run", "--", "sleep", "30"))
    started = proc.wait_event("child_started")
    child = int(str(started["child"]))
    assert alive(child)
    proc.signal(signal.SIGKILL)
    assert proc.wait_exit(5) == -signal.SIGKILL
    end = time.monotonic() + 5
    while alive(child) and time.monotonic() < end:
        time.sleep(0.02)
    assert not alive(child)
