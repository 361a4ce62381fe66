"""Benchmark: the verify gRPC generator (``lossless verify --grpc``) against a plain grpcio
asyncio client loop making the same calls, side by side, on one core each.

``ghz`` (the usual gRPC load tool) is a Go binary that no registry we may use ships (not in
Debian, PyPI or npm), so the peer is the loop every grpcio user would write: ``--conc`` workers
on one channel, each ``await``-ing one unary call after the other, on uvloop like ours.

The server is a ``grpc.aio`` server with a generic raw-bytes echo handler (no generated code),
pinned to core 1 (``taskset -c 1``). Each client runs in its own process pinned to core 0,
alternately, ``--runs`` times for ``--duration`` seconds. Ours runs in throughput mode: a rate
far above capacity, ``max_inflight`` = ``--conc``, one client (one pinned channel) and no fresh
channels, so it keeps ``--conc`` calls in flight on one channel, as the peer does. Printed per
client: the median calls/s, and the median calls per second of the client's own CPU time
(user + system of its process): the client's cost, which stays meaningful when the one-core
Python server is the bottleneck. Ratios are ours / peer (target >= 1.0).

Usage: ``.venv/bin/python bench/bench_grpc_load.py [--runs 5] [--duration 3] [--conc 64]``.
Needs grpcio (``pip install 'lossless[grpc,verify]'``) and ``taskset`` (util-linux). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHOD = "/bench.Bench/Echo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the server (a child process) ----------------------------------------------------------------
async def _serve(port: int) -> None:
    import grpc
    import grpc.aio

    async def echo(request: bytes, context: object) -> bytes:
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Bench", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("listening", flush=True)
    await server.wait_for_termination()


# -- the clients (child processes) ----------------------------------------------------------------
def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _ours(port: int, duration: float, conc: int) -> dict[str, float]:
    from lossless.verify.load.grpc_client import GrpcTarget, run_grpc_load
    from lossless.verify.model import Clock, Endpoint

    class View:
        clients = 1

        def pick(self, client: int) -> Endpoint:
            return Endpoint("bench", "127.0.0.1", port)

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(duration, stop.set)
    cpu, start = _cpu(), time.perf_counter()
    records = await run_grpc_load(
        View(),
        Clock(),
        GrpcTarget(METHOD, b"x" * 16),
        rate=1e6,
        duration=1e6,
        new_conn_ratio=0.0,
        max_inflight=conc,
        stop=stop,
        lag_budget=1e9,
    )
    elapsed, used = time.perf_counter() - start, _cpu() - cpu
    ok = sum(1 for r in records if r.grpc == 0)
    return {"calls": ok, "failed": len(records) - ok, "seconds": elapsed, "cpu": used}


async def _peer(port: int, duration: float, conc: int) -> dict[str, float]:
    import grpc.aio

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(METHOD)
    request = b"x" * 16
    done = failed = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + duration

    async def worker() -> None:
        nonlocal done, failed
        while loop.time() < end:
            try:
                await call(request, timeout=5)
                done += 1
            except grpc.aio.AioRpcError:
                failed += 1

    cpu, start = _cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed, used = time.perf_counter() - start, _cpu() - cpu
    await channel.close()
    return {"calls": done, "failed": failed, "seconds": elapsed, "cpu": used}


def _child(kind: str, port: int, duration: float, conc: int) -> None:
    from lossless.verify.load.generator import run

    main = _ours if kind == "ours" else _peer
    print(json.dumps(run(main(port, duration, conc))), flush=True)


# -- the driver ------------------------------------------------------------------------------------
def client(kind: str, port: int, duration: float, conc: int) -> dict[str, float]:
    cmd = ["taskset", "-c", "0", sys.executable, __file__, "--child", kind, str(port)]
    cmd += ["--duration", str(duration), "--conc", str(conc)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--conc", type=int, default=64)
    p.add_argument("--child", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    p.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        from lossless.verify.load.generator import run

        run(_serve(args.serve))
        return 0
    if args.child:
        _child(args.child[0], int(args.child[1]), args.duration, args.conc)
        return 0
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, __file__, "--serve", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "listening":
            print("bench_grpc_load: the server did not start", file=sys.stderr)
            return 1
        results: dict[str, list[dict[str, float]]] = {"ours": [], "peer": []}
        for i in range(args.runs):
            for kind in ("ours", "peer") if i % 2 == 0 else ("peer", "ours"):
                r = client(kind, port, args.duration, args.conc)
                results[kind].append(r)
                print(
                    f"run {i + 1} {kind:4}: {r['calls'] / r['seconds']:8.0f} calls/s, "
                    f"{r['calls'] / max(r['cpu'], 1e-9):8.0f} calls per CPU-second, "
                    f"{int(r['failed'])} failed",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(10)
    rate = {k: statistics.median(r["calls"] / r["seconds"] for r in v) for k, v in results.items()}
    per_cpu = {
        k: statistics.median(r["calls"] / max(r["cpu"], 1e-9) for r in v)
        for k, v in results.items()
    }
    print(
        f"median calls/s: ours {rate['ours']:.0f}, plain grpcio asyncio loop {rate['peer']:.0f}, "
        f"ratio {rate['ours'] / rate['peer']:.2f}x"
    )
    print(
        f"median calls per client CPU-second: ours {per_cpu['ours']:.0f}, "
        f"plain loop {per_cpu['peer']:.0f}, ratio {per_cpu['ours'] / per_cpu['peer']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
