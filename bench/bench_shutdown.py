"""Shutdown precision: exit time minus max(t0 + D, end of the last request), median over N runs,
for ``lossless serve`` on uvicorn, on 4 uvicorn workers and on gunicorn (2 workers), next to plain
uvicorn measured in the same run (its exit time minus the end of the last request; plain uvicorn
has no D). Target: ≤ 20 ms for lossless.

The exit is the moment ``waitpid`` returns in a thread blocked in it (event-driven). Each line
also shows what ``Popen.wait(timeout)`` reports for the same exit (what this bench read until
2026-11-30): it polls ``waitpid`` with a sleep doubling up to 50 ms, so it reads an exit that
falls just after one of its polls up to 50 ms late; its poll at about t0 + 363 ms fell inside the
4-worker exits (docs/benchmarks.md, "Shutdown precision").

    python -m bench.bench_shutdown [--runs 20] [--kinds "lossless uvicorn x4,uvicorn (plain)"]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "runtime"
DELAY = 0.2
WORK = 0.4
KINDS = ["lossless uvicorn", "lossless uvicorn x4", "lossless gunicorn", "uvicorn (plain)"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(kind: str, port: int) -> list[str]:
    if kind == "uvicorn (plain)":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "apps:asgi",
            "--app-dir",
            str(APPS),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    cmd = [
        sys.executable,
        "-m",
        "lossless",
        "serve",
        "apps:asgi",
        "--app-dir",
        str(APPS),
        "--port",
        str(port),
        "--drain-delay",
        str(DELAY),
        "--shutdown-timeout",
        "10",
    ]
    if kind == "lossless gunicorn":
        cmd[4] = "apps:wsgi"
        cmd += ["--wsgi", "--workers", "2"]
    if kind == "lossless uvicorn x4":
        cmd += ["--workers", "4"]
    return cmd


def _one(kind: str) -> tuple[float, float] | None:
    """One run: (exit, exit as ``Popen.wait(15)`` reports it), each minus the reference."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        _command(kind, port),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    listening = threading.Semaphore(0)

    def read_log() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if '"event":"listening"' in line:
                listening.release()

    threading.Thread(target=read_log, daemon=True).start()
    try:
        if kind == "lossless uvicorn x4":  # every worker up, not only the first one
            for _ in range(4):
                listening.acquire(timeout=15)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                time.sleep(0.02)
        done: dict[str, float] = {}

        def slow() -> None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", f"/slow?s={WORK}")
                conn.getresponse().read()
                done["end"] = time.monotonic()
                conn.close()
            except OSError:
                pass

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        exit_seen: dict[str, float] = {}

        def reap() -> None:  # blocked in waitpid: returns at the exit, no poll
            proc.wait()
            exit_seen["at"] = time.monotonic()

        reaper = threading.Thread(target=reap)
        reaper.start()
        os.kill(proc.pid, signal.SIGTERM)
        try:  # the old measurement, woken at its poll after the reaper set returncode
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        polled = time.monotonic()
        reaper.join(15)
        thread.join(5)
        if "end" not in done or "at" not in exit_seen:
            return None  # the request failed or the server hung: not a valid sample
        delay = 0.0 if kind == "uvicorn (plain)" else DELAY
        reference = max(t0 + delay, done["end"])
        return exit_seen["at"] - reference, polled - reference
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="comma-separated, of: " + ", ".join(KINDS)
    )
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",")]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kind(s) {unknown}: choose from {KINDS}")
    load_before = os.getloadavg()[0]
    lateness: dict[str, list[float]] = {k: [] for k in kinds}
    polled: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.runs):
        for kind in kinds:
            sample = _one(kind)
            if sample is None:
                print(f"{kind}: the slow request failed; sample dropped", file=sys.stderr)
            else:
                lateness[kind].append(sample[0])
                polled[kind].append(sample[1])
    load_after = os.getloadavg()[0]
    medians = {k: statistics.median(v) * 1000 for k, v in lateness.items()}
    for kind in kinds:
        values = sorted(lateness[kind])
        print(
            f"{kind:19s} exit after the reference: median {medians[kind]:6.1f} ms, "
            f"max {values[-1] * 1000:6.1f} ms over {len(values)} runs "
            f"(Popen.wait(15) reports median {statistics.median(polled[kind]) * 1000:6.1f} ms, "
            f"max {max(polled[kind]) * 1000:6.1f} ms)"
        )
    print(f"load average (1 min) {load_before:.2f} before, {load_after:.2f} after")
    ours = [k for k in kinds if k.startswith("lossless")]
    if "uvicorn (plain)" in medians:
        peer = medians["uvicorn (plain)"]
        print(", ".join(f"{k} / plain uvicorn = {medians[k] / peer:.2f}" for k in ours))
    if ours:
        worst = max(medians[k] for k in ours)
        print(f"target ≤ 20 ms: {'met' if worst <= 20 else 'NOT met'}")


if __name__ == "__main__":
    main(sys.argv[1:])
