"""Multi-worker throughput: ``lossless serve APP --workers N`` (gunicorn master, uvicorn workers,
the middleware) against bare ``uvicorn APP --workers N`` on the same minimal app, wrk as the
client, alternating runs in the same session; prints medians and the ratio (target ≥ 0.98).

    python -m bench.bench_workers [--runs 5] [--duration 5] [--workers 2]

Both sides get the same uvicorn options (uvloop, httptools, no access log), which
``lossless serve`` takes with uvicorn's own names. On a 2-core machine the workers and wrk share
the cores: the ratio, not the absolute rate, is the result.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UVICORN_OPTIONS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(kind: str, port: int, workers: int) -> list[str]:
    common = ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    if kind == "uvicorn --workers":
        return [
            *(sys.executable, "-m", "uvicorn", "bench.minimal_app:bare"),
            *common,
            *UVICORN_OPTIONS,
            "--lifespan",
            "off",
        ]
    return [
        *(sys.executable, "-m", "lossless", "serve", "bench.minimal_app:bare"),
        *common,
        *UVICORN_OPTIONS,
    ]


def _wait_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def _wrk(port: int, duration: float) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{duration:g}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise SystemExit(f"cannot read wrk output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    kinds = ["uvicorn --workers", "lossless serve --workers"]
    results: dict[str, list[float]] = {k: [] for k in kinds}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(args.runs):
        for kind in kinds:
            port = _free_port()
            proc = subprocess.Popen(
                _command(kind, port, args.workers),
                cwd=ROOT,
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                _wait_up(port, proc)
                _wrk(port, 1.0)  # warm-up
                results[kind].append(_wrk(port, args.duration))
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    medians = {k: statistics.median(v) for k, v in results.items()}
    for kind in kinds:
        print(
            f"{kind:25s} median {medians[kind]:9.0f} req/s  "
            f"runs {[round(x) for x in results[kind]]}"
        )
    ratio = medians["lossless serve --workers"] / medians["uvicorn --workers"]
    print(
        f"ratio lossless/uvicorn = {ratio:.3f} with {args.workers} workers "
        f"(target ≥ 0.98: {'met' if ratio >= 0.98 else 'NOT met'})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
