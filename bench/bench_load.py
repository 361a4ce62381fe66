"""Benchmark: the verify load generator against ``hey``, side by side, on one core each.

nginx (one worker, pinned to core 1) serves a tiny ``return 200`` response on 127.0.0.1. Each
generator runs pinned to core 0 (``taskset -c 0``; hey with ``-cpus 1``), with the same number of
keep-alive connections, alternately, several runs each; the medians and the ratio ours/hey are
printed (target >= 1.0). Then our generator runs open loop at 5,000 req/s (its default settings:
10 % fresh connections) ``--lag-runs`` times and the p99 of its schedule lag (sent - intended) is
printed for each run, with its garbage collections (target: p99 <= 1 ms in every run on a quiet
machine).

Throughput mode for ours: a rate far above capacity with ``max_conns`` = the connection count and
no fresh connections, so the schedule is always due and every released connection is reused at
once: the generator then runs as fast as it can on ``max_conns`` connections, like hey ``-c``.

Usage: ``.venv/bin/python bench/bench_load.py [--runs 5] [--duration 5] [--conns 50]
[--lag-runs 10] [--lag-only]``
Needs nginx and hey (Debian packages ``nginx`` ``hey``): installed with apt-get when missing and
running as root, else the benchmark is skipped with a message. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    fastcgi_temp_path {dir};
    uwsgi_temp_path {dir};
    scgi_temp_path {dir};
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def ensure_tools() -> bool:
    missing = [pkg for pkg, exe in (("nginx", "nginx"), ("hey", "hey")) if not _which(exe)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} with apt-get ...", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, check=False)
    missing = [pkg for pkg, exe in (("nginx", "nginx"), ("hey", "hey")) if not _which(exe)]
    if missing:
        print(f"skipped: {' '.join(missing)} not installed (apt-get install {' '.join(missing)})")
        return False
    return True


def _which(exe: str) -> str | None:
    return shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_nginx(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, port=port))
    nginx = _which("nginx")
    assert nginx is not None
    proc = subprocess.Popen(["taskset", "-c", "1", nginx, "-c", str(conf), "-p", str(directory)])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nginx did not start")


# -- our generator, in a child process pinned to core 0 -------------------------------------------
async def _child(
    port: int, rate: float, duration: float, conns: int, fresh: float
) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from lossless.verify.load.generator import run_load
    from lossless.verify.model import Clock, Endpoint

    class View:
        clients = 1
        endpoint = Endpoint("nginx", "127.0.0.1", port)

        def pick(self, client: int) -> Endpoint:
            return self.endpoint

    # the schedule may hold more requests than can be sent in ``duration``: stop sending then
    stop = asyncio.Event()
    if rate * duration > 10 * conns * 1000:  # throughput mode (far above any capacity)
        asyncio.get_running_loop().call_later(duration, stop.set)
    clock = Clock()
    pauses: list[tuple[int, float, float]] = []  # (generation, start, seconds) of collections
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = clock.now()
        else:
            pauses.append((info["generation"], started[0], clock.now() - started[0]))

    gc.callbacks.append(on_gc)
    t0 = time.perf_counter()
    records = await run_load(
        View(), clock, rate=rate, duration=duration, max_conns=conns, new_conn_ratio=fresh,
        lag_budget=3600, timeout=10, stop=stop,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    gc.callbacks.remove(on_gc)
    last_end = max(r.end or 0.0 for r in records)
    during = [p for p in pauses if p[1] <= last_end]
    ok = [r for r in records if r.status == 200]
    lags = sorted(r.sent - r.intended for r in records)
    span = max(r.end or 0.0 for r in records) - min(r.sent for r in records)
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "connections": len({r.conn_id for r in records}),
        "rps": len(ok) / span if span > 0 else 0.0,
        "elapsed": elapsed,
        "lag_p50_ms": lags[len(lags) // 2] * 1000,
        "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000,
        "lag_max_ms": lags[-1] * 1000,
        # collections while the load ran (not the ones after its last response)
        "gc_runs": len(during),
        "gc_gen2_runs": sum(1 for g, _, _ in during if g == 2),
        "gc_max_ms": max((p for _, _, p in during), default=0.0) * 1000,
    }


async def _jitter(rate: float, duration: float) -> dict[str, float]:
    """The machine's own scheduling noise: the same wake-up pattern as the generator's schedule
    (sleep until the next intended time, then note how late we are), without any I/O."""
    loop = asyncio.get_running_loop()
    count = int(rate * duration)
    lags: list[float] = []
    start = time.monotonic()
    seq = 0
    while seq < count:
        now = time.monotonic()
        intended = start + seq / rate
        if intended > now:
            fut: asyncio.Future[None] = loop.create_future()
            loop.call_later(intended - now, fut.set_result, None)
            await fut
            continue
        while seq < count and start + seq / rate <= now:
            lags.append(now - (start + seq / rate))
            seq += 1
    lags.sort()
    return {"lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000, "lag_max_ms": lags[-1] * 1000}


def jitter(*, rate: float, duration: float) -> dict[str, float]:
    cmd = ["taskset", "-c", "0", sys.executable, __file__, "--jitter", "--rate", str(rate)]
    cmd += ["--duration", str(duration)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 60)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def ours(port: int, *, rate: float, duration: float, conns: int, fresh: float) -> dict[str, float]:
    cmd = [
        "taskset", "-c", "0", sys.executable, __file__, "--child", str(port),
        "--rate", str(rate), "--duration", str(duration), "--conns", str(conns),
        "--fresh", str(fresh),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 60)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def hey(port: int, *, duration: float, conns: int) -> float:
    hey_exe = _which("hey")
    assert hey_exe is not None
    cmd = ["taskset", "-c", "0", hey_exe, "-cpus", "1", "-z", f"{duration}s", "-c", str(conns)]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"cannot read hey's output:\n{out}")
    return float(match.group(1))


def throughput(port: int, args: argparse.Namespace) -> None:
    ours_rps: list[float] = []
    hey_rps: list[float] = []
    for i in range(args.runs):
        rate = 1e6  # far above capacity: the schedule is always due
        o = ours(port, rate=rate, duration=args.duration, conns=args.conns, fresh=0.0)
        h = hey(port, duration=args.duration, conns=args.conns)
        ours_rps.append(o["rps"])
        hey_rps.append(h)
        print(f"run {i + 1}: ours {o['rps']:9.0f} req/s   hey {h:9.0f} req/s")
    mo, mh = statistics.median(ours_rps), statistics.median(hey_rps)
    print(f"throughput, {args.conns} keep-alive connections, one core, median of {args.runs}:")
    print(f"  ours {mo:.0f} req/s, hey -cpus 1 {mh:.0f} req/s, ratio ours/hey {mo / mh:.2f}")


def schedule_lag(port: int, args: argparse.Namespace) -> None:
    """``--lag-runs`` open-loop runs at ``--lag-rate``, each followed by the no-I/O baseline;
    prints the p99 of each and how many runs met the target (p99 <= 1 ms)."""
    lags: list[dict[str, float]] = []
    noise: list[dict[str, float]] = []
    for _ in range(args.lag_runs):
        lags.append(ours(port, rate=args.lag_rate, duration=args.duration, conns=2000, fresh=0.1))
        noise.append(jitter(rate=args.lag_rate, duration=args.duration))
    p99 = statistics.median(x["lag_p99_ms"] for x in lags)
    p50 = statistics.median(x["lag_p50_ms"] for x in lags)
    sent = statistics.median(x["requests"] / args.duration for x in lags)
    met = sum(1 for x in lags if x["lag_p99_ms"] <= 1.0)
    print(
        f"schedule lag at {args.lag_rate:.0f} req/s (10 % fresh connections), median of "
        f"{args.lag_runs}: p50 {p50:.3f} ms, p99 {p99:.3f} ms ({sent:.0f} req/s scheduled); "
        f"p99 <= 1 ms in {met} of {args.lag_runs} runs"
    )
    print("  per run p99 ms: " + ", ".join(f"{x['lag_p99_ms']:.3f}" for x in lags))
    print("  per run max ms: " + ", ".join(f"{x['lag_max_ms']:.1f}" for x in lags))
    print(
        "  per run garbage collections (gen 2) / longest ms: "
        + ", ".join(
            f"{x['gc_runs']:.0f}({x['gc_gen2_runs']:.0f})/{x['gc_max_ms']:.1f}" for x in lags
        )
    )
    print(
        "  baseline, the same wake-ups without any I/O (the machine's own noise), p99 ms: "
        + ", ".join(f"{x['lag_p99_ms']:.3f}" for x in noise)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--lag-rate", type=float, default=5000.0)
    parser.add_argument("--lag-runs", type=int, default=10, help="open-loop runs (default 10)")
    parser.add_argument("--lag-only", action="store_true", help="skip the comparison with hey")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=1e6, help=argparse.SUPPRESS)
    parser.add_argument("--fresh", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--jitter", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.jitter:
        import uvloop

        print(json.dumps(uvloop.run(_jitter(args.rate, args.duration))))
        return 0
    if args.child is not None:
        import uvloop

        result = uvloop.run(_child(args.child, args.rate, args.duration, args.conns, args.fresh))
        print(json.dumps(result))
        return 0
    if not ensure_tools():
        return 0
    if (os.cpu_count() or 1) < 2:
        print("note: fewer than 2 CPUs; server and generators share a core", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        proc, port = start_nginx(Path(tmp))
        try:
            if not args.lag_only:
                throughput(port, args)
            schedule_lag(port, args)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
