"""``lossless verify`` as a real subprocess: bad input gets one line and exit 2, SIGINT stops the
run cleanly (results written, nothing left behind)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests.verify.conftest import (
    NAIVE_APP,
    PYTHON,
    assert_nothing_left,
    assert_one_line_error,
    popen_cli,
    run_cli,
)

FAST = ("--before", "0.5", "--after", "0.5", "--rate", "50", "-q")


def test_command_that_exits_at_once(tmp_path: Path) -> None:
    cmd = f"{PYTHON} -c 'import sys; print(\"boom: no config\", file=sys.stderr); sys.exit(3)'"
    result = run_cli("verify", "--cmd", cmd, "--out", str(tmp_path / "run"), *FAST)
    assert_one_line_error(result, "exited unexpectedly (exit code 3", "boom: no config")
    assert (tmp_path / "run" / "timeline.jsonl").exists()  # what happened is kept


def test_command_that_cannot_start(tmp_path: Path) -> None:
    result = run_cli("verify", "--cmd", "/nonexistent/server --port {port}", *FAST)
    assert_one_line_error(result, "cannot start replica command", "/nonexistent/server")


def test_base_port_already_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("verify", "--cmd", NAIVE_APP, "--base-port", str(port), *FAST)
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is already in use")


def test_fixed_port_already_taken_in_the_command(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cmd = f"{PYTHON} -m http.server {port} --bind 127.0.0.1"
        result = run_cli("verify", "--cmd", cmd, "--replicas", "1", *FAST)
    assert_one_line_error(result, "exited unexpectedly", "Address already in use")


def test_manifest_that_is_not_a_deployment(tmp_path: Path) -> None:
    manifest = tmp_path / "svc.yaml"
    manifest.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n")
    result = run_cli("verify", "--cmd", NAIVE_APP, "-f", str(manifest), *FAST)
    assert_one_line_error(result, str(manifest), "not a Deployment")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--max-surge", "0", "--max-unavailable", "0%"), "may not be 0 when maxSurge is 0"),
        (("--max-surge", "lots"), "maxSurge"),
        (("--propagation-delay", "soon"), "propagation delay"),
        (("--replicas", "0"), "--replicas must be >= 1"),
        (("--readiness-period", "1"), "need --readiness-path"),
        (("--env", "NOEQUALS"), "KEY=VALUE"),
        (("--timeout", "0"), "--timeout: must be a positive duration"),  # was 5 s, silently
    ],
)
def test_bad_flags(args: tuple[str, ...], needle: str) -> None:
    result = run_cli("verify", "--cmd", NAIVE_APP, *args, *FAST)
    assert_one_line_error(result, needle)


def test_cmd_is_required() -> None:
    assert_one_line_error(run_cli("verify", *FAST), "--cmd is required")


def _wait_for(path: Path, needle: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")


def test_sigint_during_the_rollout_stops_cleanly(tmp_path: Path) -> None:
    """1. a rolling update whose old replicas sit in a 20 s preStop 2. SIGINT once the first
    preStop started. Result: exit 130 within seconds, records and timeline written, every
    replica (also the one in its preStop) gone, every port free."""
    out = tmp_path / "run"
    args = ("verify", "--cmd", NAIVE_APP, "--out", str(out), "--replicas", "2",
            "--rate", "50", "--before", "0.5", "--after", "5", "--prestop-sleep", "20",
            "--readiness-path", "/readyz", "--readiness-period", "0.2")  # fmt: skip
    with popen_cli(*args) as proc:
        _wait_for(out / "timeline.jsonl", "prestop_start")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
    records = (out / "records.csv").read_text().splitlines()
    assert len(records) > 5  # header + what was measured
    assert "run_end" in (out / "timeline.jsonl").read_text()
    assert_nothing_left(out)


def test_sigint_before_the_load(tmp_path: Path) -> None:
    out = tmp_path / "run"
    slow = f"{PYTHON} -c 'import time; time.sleep(60)'"  # never listens: never ready
    args = ("verify", "--cmd", slow, "--out", str(out), "--replicas", "2",
            "--readiness-path", "/readyz", "--readiness-period", "0.2")  # fmt: skip
    with popen_cli(*args) as proc:
        _wait_for(out / "timeline.jsonl", '"started"')
        _wait_for(out / "timeline.jsonl", "v1-1")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert_nothing_left(out)
