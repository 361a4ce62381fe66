"""Overhead of the ASGI middleware: requests/s of a minimal app under uvicorn with and without
``LosslessMiddleware``, wrk as the client, server pinned to core 0 and wrk to core 1, alternating
runs in the same session; prints medians and the ratio (target: ≤ 2 % loss).

    python -m bench.bench_overhead [--runs 5] [--duration 5]
"""

from __future__ import annotations

import argparse
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(core: int) -> list[str]:
    return (
        ["taskset", "-c", str(core)]
        if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1
        else []
    )  # type: ignore[operator]


def _serve(app: str, port: int) -> subprocess.Popen[bytes]:
    cmd = [
        *_pin(0),
        sys.executable,
        "-m",
        "uvicorn",
        f"bench.minimal_app:{app}",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "off",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"uvicorn ({app}) did not start")


def _wrk(port: int, duration: float) -> float:
    out = subprocess.run(
        [*_pin(1), "wrk", "-t1", "-c32", f"-d{duration:g}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise SystemExit(f"cannot read wrk output:\n{out}")
    return float(match.group(1))


def _inprocess_cost(calls: int = 200_000) -> tuple[float, float, float]:
    """Seconds per call of the bare app, of the wrapped app as under any server, and of the
    wrapped app with stream tracking armed (as under ``lossless serve``, which ends streams at
    t0 + D), called directly (no server, no sockets): the middleware's own CPU cost, free of the
    network's noise."""
    import asyncio

    from bench.minimal_app import bare, wrapped

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: object) -> None:
        return None

    async def loop(app: object) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await app(scope, receive, send)  # type: ignore[operator]
        return (time.perf_counter() - start) / calls

    async def all_three() -> tuple[float, float, float]:
        await loop(wrapped)  # warm-up (starts the lifecycle once)
        b = [await loop(bare) for _ in range(3)]
        w = [await loop(wrapped) for _ in range(3)]
        streams = wrapped.lifecycle.streams
        streams.armed = True
        try:
            a = [await loop(wrapped) for _ in range(3)]
        finally:
            streams.armed = False
        return statistics.median(b), statistics.median(w), statistics.median(a)

    return asyncio.run(all_three())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    results: dict[str, list[float]] = {"bare": [], "wrapped": []}
    for _ in range(args.runs):
        for app in ("bare", "wrapped"):
            port = _free_port()
            proc = _serve(app, port)
            try:
                _wrk(port, 1.0)  # warm-up
                results[app].append(_wrk(port, args.duration))
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    bare, wrapped = statistics.median(results["bare"]), statistics.median(results["wrapped"])
    print(f"bare uvicorn     median {bare:10.0f} req/s  runs {[round(x) for x in results['bare']]}")
    print(
        f"with middleware  median {wrapped:10.0f} req/s  runs {[round(x) for x in results['wrapped']]}"
    )
    print(
        f"ratio wrapped/bare = {wrapped / bare:.3f}  (loss {100 * (1 - wrapped / bare):.1f} %, target ≤ 2 %)"
    )
    b, w, a = _inprocess_cost()
    cost = w - b
    print(
        f"in-process: bare app {b * 1e6:.2f} us/call, wrapped {w * 1e6:.2f} us/call: "
        f"middleware costs {cost * 1e6:.2f} us/request"
    )
    print(
        f"in-process, streams tracked (as under lossless serve): {a * 1e6:.2f} us/call: "
        f"{(a - b) * 1e6:.2f} us/request, derived loss {100 * (a - b) * bare:.1f} %"
    )
    print(
        f"derived loss at the bare server's rate: {100 * cost * bare:.1f} % "
        f"(= middleware cost x bare req/s; less noisy than the wrk ratio on a shared machine)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
