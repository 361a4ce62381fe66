"""Benchmark: the verifier's memory over many upgrades, and a long soak.

1. **Memory flat with N.** The same ``lossless verify`` run of the lossless example app (2
   replicas, 1,000 req/s, one kill -9 in the middle) with ``--upgrades 2`` and with
   ``--upgrades 10``: the verifier's own peak RSS (``VmHWM`` of its process, polled every 50 ms;
   the replicas are other processes and are not counted) for each, and the ratio N=10 / N=2
   (target ≤ 1.10: records stream to disk, the analysis keeps counts, nothing grows per
   request). Several runs each, alternating, medians.
2. **The long soak** (``--long``): 160 upgrades in a row of 2 replicas at 2,000 req/s (10 s of
   load before and after: over 1,000,000 requests) with one kill -9, lossless app: its requests,
   failures, upgrade failures (target 0), fault failures (all attributed), requests sent late,
   duration and peak RSS, next to the N=2 runs' peak RSS (``--runs 0`` skips part 1).

Usage: ``.venv/bin/python -m bench.bench_soak [--runs 3] [--long]``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
APP = (
    f"{sys.executable} -m lossless serve examples.app:app --host 127.0.0.1 --port {{port}} "
    "--drain-delay 1 --shutdown-timeout 10"
)


def _hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_verify(
    upgrades: int, rate: int, replicas: int, fault: str, around: float = 1.0
) -> dict[str, Any]:
    """One verify run; its JSON plus ``peak_rss_mb`` and ``wall_s``."""
    out = Path(tempfile.mkdtemp(prefix="bench-soak-")) / "run"
    argv = [
        sys.executable, "-m", "lossless", "verify", "--cmd", APP, "--out", str(out),
        "--upgrades", str(upgrades), "--replicas", str(replicas), "--max-surge", "1",
        "--max-unavailable", "0", "--readiness-path", "/readyz", "--readiness-period", "0.2",
        "--rate", str(rate), "--before", str(around), "--after", str(around),
        "--propagation-delay", "0.5±0.2",
        "--fault", fault, "--json",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    while proc.poll() is None:
        hwm = _hwm_kb(proc.pid)
        if hwm is not None:
            peak = max(peak, hwm)
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    try:
        doc: dict[str, Any] = json.loads(stdout)
    except ValueError:
        raise SystemExit(f"verify failed (exit {proc.returncode}): {stderr.strip()}") from None
    doc["peak_rss_mb"] = peak / 1024
    doc["wall_s"] = time.monotonic() - started
    return doc


def _line(label: str, doc: dict[str, Any]) -> str:
    return (
        f"{label:<14} requests {doc['requests']:>8}  failures {doc['failures']:>4} "
        f"(fault {doc['fault_failures']}, upgrade {doc['upgrade_failures']})  "
        f"peak RSS {doc['peak_rss_mb']:6.1f} MB  wall {doc['wall_s']:6.1f} s  "
        f"late {doc['late']} (lag p99 {doc['lag_ms'].get('p99', 0):.1f} ms)  "
        f"exit {doc['exit_code']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--long", action="store_true", help="also run the 50-upgrade soak")
    parser.add_argument("--long-upgrades", type=int, default=160)
    parser.add_argument("--long-rate", type=int, default=2000)
    parser.add_argument("--long-replicas", type=int, default=2)
    args = parser.parse_args()
    peaks: dict[int, list[float]] = {2: [], 10: []}
    for i in range(args.runs):
        for n in (2, 10):
            doc = run_verify(n, 1000, 2, "kill@rollout:2+0.5")
            peaks[n].append(doc["peak_rss_mb"])
            print(_line(f"N={n} run {i + 1}", doc), flush=True)
    small = statistics.median(peaks[2]) if peaks[2] else math.nan
    if args.runs:
        large = statistics.median(peaks[10])
        print(
            f"peak RSS median: N=2 {small:.1f} MB, N=10 {large:.1f} MB, "
            f"ratio N=10/N=2 = {large / small:.3f} (target <= 1.10)"
        )
    if args.long:
        k = args.long_upgrades // 2
        doc = run_verify(
            args.long_upgrades, args.long_rate, args.long_replicas, f"kill@rollout:{k}+0.5", 10
        )
        print(_line(f"N={args.long_upgrades}", doc))
        print(
            f"long soak: {doc['requests']} requests, {doc['upgrade_failures']} upgrade "
            f"failures, {doc['fault_failures']} fault failures (all attributed: "
            f"{doc['fault_failures'] == doc['failures']}), peak RSS {doc['peak_rss_mb']:.1f} MB "
            f"= {doc['peak_rss_mb'] / small:.3f} x the N=2 run's"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("COLUMNS", "120")
    sys.exit(main())
